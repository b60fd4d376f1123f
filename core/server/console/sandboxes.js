// Sandboxes: runtime nodes (capacity, heartbeat age, drain), templates (create, edit,
// delete), sandboxes (state, resources, terminate), and for one sandbox: exec with streamed
// output, an interactive terminal (terminal.js) and its files (browse, upload, download).

import { h, fill, field, guarded, age, time, bytes, randomId, table, showError } from './dom.js';
import { terminalPanel } from './terminal.js';

export function mount(root, { channel, token }, path) {
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const nodesBox = h('div', {});
  const templatesBox = h('div', {});
  const sandboxesBox = h('div', {});
  const detail = h('section', { class: 'card sandbox-detail', 'aria-labelledby': 'sandbox-title', hidden: true });
  let templates = [];

  // ---- templates form
  const tId = h('input', { name: 'templateId', required: true, placeholder: 'busybox' });
  const tName = h('input', { name: 'templateName', required: true, placeholder: 'BusyBox' });
  const tImage = h('input', { name: 'image', required: true, placeholder: 'agentvm-test/busybox:latest' });
  const tCpu = h('input', { name: 'cpu', type: 'number', step: 'any', min: '0.01', placeholder: '1' });
  const tMem = h('input', { name: 'memory', type: 'number', min: '6', placeholder: '512' });
  const tWorkdir = h('input', { name: 'workdir', placeholder: '/tmp' });
  const tError = h('p', { class: 'error', role: 'alert', hidden: true });
  const tSubmit = h('button', { type: 'submit' }, 'Create template');
  let editing = null;
  const templateForm = h('form', { class: 'grid-form', 'aria-label': 'Template' },
    field('Id', tId), field('Name', tName), field('Image', tImage), field('CPU cores', tCpu), field('Memory (MiB)', tMem), field('Workdir', tWorkdir),
    tError, h('div', { class: 'row' }, tSubmit, h('button', { type: 'button', class: 'quiet', onclick: () => resetTemplateForm() }, 'Clear')));
  templateForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    guarded(tError, async () => {
      const spec = { templateId: tId.value.trim(), name: tName.value.trim(), image: tImage.value.trim() };
      if (tCpu.value) spec.defaultCpuCores = Number(tCpu.value);
      if (tMem.value) spec.defaultMemoryMb = Number(tMem.value);
      if (tWorkdir.value.trim()) spec.workdir = tWorkdir.value.trim();
      await channel.request(editing ? 'template_update_request' : 'template_create_request', spec);
      resetTemplateForm();
      await refresh();
    });
  });
  function resetTemplateForm() {
    editing = null;
    templateForm.reset();
    tId.readOnly = false;
    tSubmit.textContent = 'Create template';
  }
  function editTemplate(t) {
    editing = t.id;
    tId.value = t.id;
    tId.readOnly = true;
    tName.value = t.name;
    tImage.value = t.image;
    tCpu.value = t.defaultCpuCores;
    tMem.value = t.defaultMemoryMb;
    tWorkdir.value = t.workdir || '';
    tSubmit.textContent = `Save ${t.id}`;
    tName.focus();
  }

  // ---- sandbox create
  const sTemplate = h('select', { name: 'templateId', required: true });
  const sError = h('p', { class: 'error', role: 'alert', hidden: true });
  const createButton = h('button', { type: 'submit' }, 'Create sandbox');
  const sandboxForm = h('form', { class: 'inline', 'aria-label': 'New sandbox' }, field('Template', sTemplate), createButton, sError);
  sandboxForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    guarded(sError, async () => {
      createButton.disabled = true;
      createButton.textContent = 'Creating…';
      try {
        const { sandbox } = await channel.request('sandbox_create_request', { templateId: sTemplate.value });
        await refresh();
        location.hash = `#/sandboxes/${encodeURIComponent(sandbox.id)}`;
      } finally {
        createButton.disabled = false;
        createButton.textContent = 'Create sandbox';
      }
    });
  });

  root.append(h('div', { class: 'stack' },
    error,
    h('section', { class: 'card', 'aria-labelledby': 'nodes-title' }, h('div', { class: 'section-head' }, h('h2', { id: 'nodes-title' }, 'Nodes'), h('button', { type: 'button', class: 'quiet', onclick: () => refresh() }, 'Refresh')), nodesBox),
    h('section', { class: 'card', 'aria-labelledby': 'templates-title' }, h('h2', { id: 'templates-title' }, 'Templates'), templatesBox, templateForm),
    h('section', { class: 'card', 'aria-labelledby': 'sandboxes-title' }, h('h2', { id: 'sandboxes-title' }, 'Sandboxes'), sandboxForm, sandboxesBox),
    detail));

  async function refresh() {
    await guarded(error, async () => {
      const [nodes, tpl, sbx] = await Promise.allSettled([
        channel.request('node_list_request'),
        channel.request('template_list_request'),
        channel.request('sandbox_list_request'),
      ]);
      if (nodes.status === 'fulfilled') renderNodes(nodes.value.nodes);
      else fill(nodesBox, h('p', { class: 'empty' }, nodes.reason.message));
      if (tpl.status === 'fulfilled') {
        templates = tpl.value.templates;
        renderTemplates();
      }
      if (sbx.status === 'fulfilled') renderSandboxes(sbx.value.sandboxes);
      else fill(sandboxesBox, h('p', { class: 'empty' }, sbx.reason.message));
    });
  }

  function renderNodes(nodes) {
    fill(nodesBox, table('Runtime nodes', ['Node', 'Status', 'CPU', 'Memory', 'Sandboxes', 'Heartbeat', ''], nodes.map((n) => [
      h('code', {}, n.node_id),
      h('span', { class: `badge ${n.status}` }, n.admin_status && n.admin_status !== n.status ? `${n.status} (${n.admin_status})` : n.status),
      `${n.allocated_cpu_cores} / ${n.total_cpu_cores}`,
      `${n.allocated_memory_mb} / ${n.total_memory_mb} MiB`,
      `${n.running_containers} / ${n.max_containers}`,
      n.liveness === 'heartbeat' ? age(n.last_heartbeat_at) : `probed${n.last_heartbeat_at ? ', ' + age(n.last_heartbeat_at) : ''}`,
      (n.admin_status || n.status) === 'draining'
        ? h('button', { type: 'button', onclick: () => setNode(n.node_id, 'online') }, 'Undrain')
        : h('button', { type: 'button', class: 'quiet', onclick: () => setNode(n.node_id, 'draining') }, 'Drain'),
    ]), 'No runtime node: start the server with --docker, or run `agentvm-server node join`.'));
  }

  async function setNode(nodeId, status) {
    await guarded(error, () => channel.request('node_update_request', { nodeId, status }));
    refresh();
  }

  function renderTemplates() {
    fill(templatesBox, table('Templates', ['Id', 'Name', 'Image', 'CPU', 'Memory', 'Pool', ''], templates.map((t) => [
      h('code', {}, t.id), t.name, h('code', {}, t.image), t.defaultCpuCores, `${t.defaultMemoryMb} MiB`, t.warmPoolSize,
      h('span', { class: 'row' },
        h('button', { type: 'button', class: 'quiet', onclick: () => editTemplate(t), 'aria-label': `Edit template ${t.id}` }, 'Edit'),
        h('button', { type: 'button', class: 'danger', onclick: () => deleteTemplate(t.id), 'aria-label': `Delete template ${t.id}` }, 'Delete')),
    ]), 'No template yet: create one below.'));
    const current = sTemplate.value;
    fill(sTemplate, templates.map((t) => h('option', { value: t.id, selected: t.id === current }, `${t.name} (${t.id})`)));
    createButton.disabled = !templates.length;
  }

  async function deleteTemplate(id) {
    if (!confirm(`Delete template ${id}? Sandboxes made from it keep running.`)) return;
    await guarded(error, () => channel.request('template_delete_request', { templateId: id }));
    refresh();
  }

  function renderSandboxes(list) {
    fill(sandboxesBox, table('Sandboxes', ['Sandbox', 'Template', 'Node', 'Status', 'Resources', 'Created', ''], list.map((s) => [
      h('a', { href: `#/sandboxes/${encodeURIComponent(s.id)}` }, h('code', {}, s.id)),
      s.templateId, s.nodeId,
      h('span', { class: `badge ${s.status}` }, s.status),
      `${s.resources.cpuCores} CPU, ${s.resources.memoryMb} MiB`,
      time(s.createdAt),
      ['running', 'creating'].includes(s.status)
        ? h('button', { type: 'button', class: 'danger', onclick: () => terminate(s.id), 'aria-label': `Terminate ${s.id}` }, 'Terminate')
        : '',
    ]), 'No sandbox yet.'));
  }

  async function terminate(id) {
    await guarded(error, () => channel.request('sandbox_terminate_request', { sandboxId: id }));
    refresh();
  }

  // ---- one sandbox: live usage, pause and resume, exec, terminal and files
  let current = null;
  let usageTimer = null;
  // The open terminal outlives a re-render of its sandbox (pause, resume, a route update);
  // another sandbox, or leaving the view, closes it.
  let terminal = null;
  const stopUsage = () => { clearInterval(usageTimer); usageTimer = null; };
  const closeTerminal = () => { terminal?.close(); terminal = null; };
  async function update([sandboxId] = []) {
    stopUsage();
    if (sandboxId !== terminal?.sandboxId) closeTerminal();
    if (!sandboxId) {
      detail.hidden = true;
      current = null;
      return;
    }
    await guarded(error, async () => {
      const { sandbox } = await channel.request('sandbox_get_request', { sandboxId });
      if (!sandbox) throw new Error(`Sandbox not found: ${sandboxId}`);
      current = sandbox;
      renderDetail(sandbox);
    });
  }

  function renderDetail(s) {
    if (terminal?.sandboxId !== s.id) {
      closeTerminal();
      terminal = terminalPanel(s.id, token);
    }
    const cmd = h('input', { name: 'command', required: true, placeholder: 'echo hi', autocomplete: 'off', spellcheck: 'false' });
    const out = h('pre', { class: 'output', role: 'log', 'aria-live': 'polite', 'aria-label': 'Output' });
    const execState = h('span', { role: 'status' });
    const run = h('button', { type: 'submit' }, 'Run');
    const execError = h('p', { class: 'error', role: 'alert', hidden: true });
    const execForm = h('form', { class: 'inline', 'aria-label': 'Run a command' }, field('Command (sh -c)', cmd), run, execState);
    execForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      exec(s.id, cmd.value, out, execState, run, execError);
    });

    const dir = h('input', { name: 'path', value: s.workdir, 'aria-label': 'Directory' });
    const listing = h('div', {});
    const filesError = h('p', { class: 'error', role: 'alert', hidden: true });
    const upload = h('input', { type: 'file', name: 'upload', multiple: true });
    const browse = h('form', { class: 'inline', 'aria-label': 'Browse files' }, field('Directory', dir), h('button', { type: 'submit' }, 'List'));
    browse.addEventListener('submit', (ev) => {
      ev.preventDefault();
      list(s.id, dir, listing, filesError);
    });
    upload.addEventListener('change', () => guarded(filesError, async () => {
      for (const file of upload.files) {
        const content = await base64(file);
        await channel.request('sandbox_file_write_request', { sandboxId: s.id, path: join(dir.value, file.name), content, encoding: 'base64' });
      }
      upload.value = '';
      await list(s.id, dir, listing, filesError);
    }));

    const live = ['running', 'paused'].includes(s.status);
    const usageBox = h('dl', { class: 'usage', 'aria-label': 'Usage' });
    const lifecycleError = h('p', { class: 'error', role: 'alert', hidden: true });
    const toggle = s.status === 'paused'
      ? h('button', { type: 'button', onclick: () => lifecycle(s.id, 'sandbox_resume_request', lifecycleError) }, 'Resume')
      : h('button', { type: 'button', onclick: () => lifecycle(s.id, 'sandbox_pause_request', lifecycleError), disabled: s.status !== 'running' }, 'Pause');

    fill(detail,
      h('div', { class: 'section-head' }, h('h2', { id: 'sandbox-title' }, 'Sandbox ', h('code', {}, s.id)), h('a', { href: '#/sandboxes', class: 'quiet' }, 'Close')),
      h('p', {}, h('span', { class: `badge ${s.status}` }, s.status), ` on ${s.nodeId} · ${s.image} · ${s.resources.cpuCores} CPU, ${s.resources.memoryMb} MiB · user ${s.user} · expires ${time(s.expiresAt)}`),
      live ? h('div', { class: 'inline' }, toggle, h('span', { class: 'note' }, s.status === 'paused' ? 'Paused: the next command or file operation resumes it.' : 'Pausing freezes its processes; it keeps its memory and files.')) : null,
      lifecycleError,
      live ? h('h3', {}, 'Usage') : null,
      live ? usageBox : null,
      h('h3', {}, 'Run a command'),
      execForm, execError, out,
      h('p', { class: 'note' }, 'A command runs to its end with stdin closed and its output streams here; for a program that asks for input, open a terminal.'),
      h('h3', {}, 'Terminal'),
      terminal.element,
      h('h3', {}, 'Files'),
      browse, field('Upload to this directory', upload), filesError, listing);
    detail.hidden = false;
    list(s.id, dir, listing, filesError);
    if (live) {
      const poll = () => showUsage(s.id, usageBox);
      poll();
      usageTimer = setInterval(() => { if (!document.hidden) poll(); }, 2_000);
    }
  }

  async function lifecycle(sandboxId, type, lifecycleError) {
    await guarded(lifecycleError, async () => {
      const { sandbox } = await channel.request(type, { sandboxId });
      stopUsage();
      current = sandbox;
      renderDetail(sandbox);
      refresh();
    });
  }

  async function showUsage(sandboxId, box) {
    try {
      const { usage: u } = await channel.request('sandbox_usage_request', { sandboxId });
      const pct = u.memoryLimitBytes ? ` of ${bytes(u.memoryLimitBytes)} (${Math.round((u.memoryBytes / u.memoryLimitBytes) * 100)}%)` : '';
      const rows = [
        ['CPU', u.cpuPercent === undefined || u.cpuPercent === null ? 'measuring…' : `${u.cpuPercent.toFixed(1)}% of a core`],
        ['Memory', `${bytes(u.memoryBytes)}${pct}`],
        ['Processes', String(u.pids)],
        ['Network', `↓ ${bytes(u.netRxBytes)} · ↑ ${bytes(u.netTxBytes)}`],
      ];
      fill(box, ...rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', { 'data-usage': k.toLowerCase() }, v)]));
      box.dataset.memoryBytes = String(u.memoryBytes);
    } catch (e) {
      fill(box, h('dt', {}, 'Usage'), h('dd', {}, e.message));
      stopUsage();
    }
  }

  async function exec(sandboxId, command, out, state, run, execError) {
    const executionId = randomId('exec_');
    out.textContent = '';
    state.textContent = 'Running…';
    run.disabled = true;
    channel.subscribe(sandboxId);
    const stopListening = channel.listen((e) => {
      if (e.data?.executionId !== executionId) return;
      if (e.type === 'sandbox_exec_output') {
        const chunk = h('span', { class: e.data.stream }, e.data.data);
        out.append(chunk);
        out.scrollTop = out.scrollHeight;
      }
    });
    try {
      const { execution } = await channel.request('sandbox_exec_request', { sandboxId, code: command, executionId });
      state.textContent = `${execution.status}${execution.exitCode !== undefined && execution.exitCode !== null ? ', exit ' + execution.exitCode : ''}${execution.durationMs !== undefined ? ' in ' + execution.durationMs + ' ms' : ''}`;
      // Output that came before the listener joined (or was dropped) is in the response.
      if (!out.textContent && (execution.stdout || execution.stderr)) {
        out.append(h('span', { class: 'stdout' }, execution.stdout), h('span', { class: 'stderr' }, execution.stderr));
      }
      showError(execError, null);
    } catch (e) {
      state.textContent = '';
      showError(execError, e);
    } finally {
      stopListening();
      run.disabled = false;
    }
  }

  async function list(sandboxId, dir, listing, filesError) {
    await guarded(filesError, async () => {
      const path = dir.value.trim() || '/';
      const { files } = await channel.request('sandbox_file_list_request', { sandboxId, path });
      const parent = path.replace(/\/+$/, '').replace(/\/[^/]*$/, '') || '/';
      fill(listing, path !== '/' ? h('button', { type: 'button', class: 'quiet', onclick: () => { dir.value = parent; list(sandboxId, dir, listing, filesError); } }, '↑ Parent directory') : null,
        table(`Files in ${path}`, ['Name', 'Kind', 'Size', 'Modified', ''], files.map((f) => [
          f.kind === 'dir'
            ? h('button', { type: 'button', class: 'link', onclick: () => { dir.value = f.path; list(sandboxId, dir, listing, filesError); } }, f.name + '/')
            : h('span', { class: 'filename' }, f.name),
          f.kind, bytes(f.size), time(typeof f.modified === 'number' && f.modified < 1e11 ? f.modified * 1000 : f.modified),
          f.kind === 'file' ? h('button', { type: 'button', class: 'quiet', onclick: () => download(sandboxId, f, filesError), 'aria-label': `Download ${f.name}` }, 'Download') : '',
        ]), 'Empty directory.'));
    });
  }

  async function download(sandboxId, f, filesError) {
    await guarded(filesError, async () => {
      const { content } = await channel.request('sandbox_file_read_request', { sandboxId, path: f.path, encoding: 'base64' });
      const bin = Uint8Array.from(atob(content), (c) => c.charCodeAt(0));
      const url = URL.createObjectURL(new Blob([bin]));
      const a = h('a', { href: url, download: f.name });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    });
  }

  refresh().then(() => update(path));
  const timer = setInterval(() => { if (!document.hidden) refresh(); }, 10_000);
  return { unmount: () => { clearInterval(timer); stopUsage(); closeTerminal(); }, update: (p) => { refresh(); update(p); } };
}

function join(dir, name) {
  return `${dir.replace(/\/+$/, '')}/${name}`;
}

function base64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ''));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}
