// Operators: the server's version and key metrics (from /metrics), access tokens (create
// shows the secret once; revoke), and the live events this connection receives, filtered by
// topic. Tokens and metrics need an operator token when the server requires authentication.

import { h, fill, field, guarded, time, table } from './dom.js';

export function mount(root, { channel, http, recent }) {
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const version = h('span', {}, '…');
  const metricsBox = h('dl', { class: 'metrics' });
  const metricsError = h('p', { class: 'error', role: 'alert', hidden: true });
  const tokensBox = h('div', {});
  const tokenError = h('p', { class: 'error', role: 'alert', hidden: true });
  const secretBox = h('div', { class: 'secret', hidden: true, role: 'status' });
  const all = h('input', { type: 'checkbox', name: 'all', checked: true });
  const containers = h('input', { name: 'containers', placeholder: 'user-alice, user-bob', disabled: true });
  all.addEventListener('change', () => {
    containers.disabled = all.checked;
    if (!all.checked) containers.focus();
  });
  const tokenForm = h('form', { class: 'inline', 'aria-label': 'New token' },
    h('label', { class: 'check' }, all, ' All containers (operator)'),
    field('Containers', containers),
    h('button', { type: 'submit' }, 'Create token'));
  tokenForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    guarded(tokenError, async () => {
      // A token for every container is asked for explicitly (the server wants `all: true`).
      const data = all.checked
        ? { all: true }
        : { containers: containers.value.split(',').map((c) => c.trim()).filter(Boolean) };
      const r = await channel.request('token_create_request', data);
      const secret = h('code', { class: 'token-secret' }, r.token);
      fill(secretBox,
        h('p', {}, h('strong', {}, `Token ${r.id} created. `), 'Copy it now: it is shown this once (the server keeps only its hash).'),
        secret, ' ',
        h('button', { type: 'button', class: 'quiet', onclick: () => navigator.clipboard?.writeText(r.token) }, 'Copy'),
        h('button', { type: 'button', class: 'quiet', onclick: () => { secretBox.hidden = true; secretBox.replaceChildren(); } }, 'Done'));
      secretBox.hidden = false;
      await loadTokens();
    });
  });

  const topic = h('input', { name: 'topic', placeholder: 'all topics (global, a session or sandbox id)', list: 'topic-hints' });
  const topicHints = h('datalist', { id: 'topic-hints' }, h('option', { value: 'global' }));
  const typeFilter = h('input', { name: 'type', placeholder: 'any type (text_delta, sandbox_…)' });
  const pause = h('input', { type: 'checkbox', name: 'pause' });
  const eventList = h('ol', { class: 'events', 'aria-label': 'Live events', reversed: true });

  root.append(h('div', { class: 'stack' },
    error,
    h('section', { class: 'card', 'aria-labelledby': 'server-title' },
      h('h2', { id: 'server-title' }, 'Server'),
      h('p', {}, 'agentvm-server ', version, ' · ', h('a', { href: '/v1/openapi.json' }, 'OpenAPI'), ' · ', h('a', { href: '/metrics' }, 'Prometheus text')),
      metricsError, metricsBox),
    h('section', { class: 'card', 'aria-labelledby': 'tokens-title' },
      h('h2', { id: 'tokens-title' }, 'Access tokens'), secretBox, tokenForm, tokenError, tokensBox),
    h('section', { class: 'card', 'aria-labelledby': 'events-title' },
      h('h2', { id: 'events-title' }, 'Live events'),
      h('p', { class: 'note' }, 'What this connection receives: the global topic, and the session and sandbox topics the console has joined.'),
      h('div', { class: 'inline' }, field('Topic', topic), topicHints, field('Type contains', typeFilter), h('label', { class: 'check' }, pause, ' Pause')),
      eventList)));

  // ---- version and metrics
  http('/health').then((r) => r.json()).then((j) => { version.textContent = j.version; }, () => { version.textContent = '(unknown)'; });
  let previous = null;
  async function loadMetrics() {
    await guarded(metricsError, async () => {
      const text = await (await http('/metrics')).text();
      const m = parseMetrics(text);
      const now = Date.now();
      const sent = m.agentvm_events_sent_total ?? 0;
      const rate = previous ? ((sent - previous.sent) * 1000) / (now - previous.at) : null;
      previous = { sent, at: now };
      const count = m.agentvm_request_duration_seconds_count ?? 0;
      const sum = m.agentvm_request_duration_seconds_sum ?? 0;
      if (m.version) version.textContent = m.version;
      const rows = [
        ['Connections', m.agentvm_connections],
        ['Agents running', m.agentvm_agents_running],
        ['Events/s', rate === null ? '…' : rate.toFixed(1)],
        ['Requests', m.agentvm_requests_total],
        ['Mean latency', count ? `${((sum / count) * 1000).toFixed(1)} ms` : '—'],
        ['Sandboxes live', m.agentvm_sandboxes_live],
        ['Nodes online', m.agentvm_nodes_online],
        ['Executions', m.agentvm_executions_total],
      ];
      fill(metricsBox, rows.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v ?? '—'))));
    });
  }

  // ---- tokens
  async function loadTokens() {
    await guarded(tokenError, async () => {
      const { tokens } = await channel.request('token_list_request');
      fill(tokensBox, table('Access tokens', ['Id', 'Scope', 'Created', 'State', ''], tokens.map((t) => [
        h('code', {}, t.id),
        t.containers ? t.containers.join(', ') : 'all containers',
        time(t.createdAt),
        t.revokedAt ? `revoked ${time(t.revokedAt)}` : 'active',
        t.revokedAt ? '' : h('button', { type: 'button', class: 'danger', onclick: () => revoke(t.id), 'aria-label': `Revoke ${t.id}` }, 'Revoke'),
      ]), 'No token yet.'));
    });
  }
  async function revoke(id) {
    if (!confirm(`Revoke ${id}? Its connections are closed and it is refused from now on.`)) return;
    await guarded(tokenError, () => channel.request('token_revoke_request', { tokenId: id }));
    await loadTokens();
  }

  // ---- live events
  const topicOf = (e) => e.context?.sessionId ?? (e.source === 'sandbox' && e.data?.sandboxId) ?? 'global';
  // app.js keeps the last events of the connection in `recent` (newest first).
  const stop = channel.listen((e) => {
    if (!e.type?.endsWith('_response') && !pause.checked) renderEvents();
  });
  topic.addEventListener('input', renderEvents);
  typeFilter.addEventListener('input', renderEvents);
  pause.addEventListener('change', renderEvents);
  function renderEvents() {
    const want = topic.value.trim();
    const type = typeFilter.value.trim();
    const events = recent.map((e) => ({ e, t: topicOf(e) || 'global' }));
    for (const { t } of events) {
      if (![...topicHints.options].some((o) => o.value === t)) topicHints.append(h('option', { value: t }));
    }
    const shown = events.filter(({ e, t }) => (!want || t === want) && (!type || e.type.includes(type))).slice(0, 100);
    fill(eventList, shown.length ? shown.map(({ e, t }) => h('li', {},
      h('time', {}, new Date(e.timestamp || Date.now()).toLocaleTimeString()), ' ',
      h('code', { class: 'type' }, e.type), ' ', h('span', { class: 'topic' }, t), ' ',
      h('span', { class: 'data' }, JSON.stringify(e.data).slice(0, 200)))) : h('li', { class: 'empty' }, 'No event yet.'));
  }

  // A second sample soon after the first gives events/s without waiting for the timer.
  const soon = setTimeout(loadMetrics, 1000);
  loadMetrics();
  loadTokens();
  renderEvents();
  const timer = setInterval(() => { if (!document.hidden) loadMetrics(); }, 5000);
  return { unmount: () => { clearInterval(timer); clearTimeout(soon); stop(); }, update: () => {} };
}

/** The samples of Prometheus text, by name (labels summed away), plus build_info's version. */
export function parseMetrics(text) {
  const out = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/);
    if (!m) continue;
    const [, name, labels, value] = m;
    if (name === 'agentvm_build_info') {
      const v = labels?.match(/version="([^"]*)"/);
      if (v) out.version = v[1];
      continue;
    }
    if (name.endsWith('_bucket')) continue;
    out[name] = (out[name] ?? 0) + Number(value);
  }
  return out;
}
