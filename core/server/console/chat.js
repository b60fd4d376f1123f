// Chat: containers → images → sessions, and a conversation that streams. The URL's hash
// (#/chat/<container>/<image>/<session>) keeps the selection, so a reload shows the same
// conversation with its history (session_messages_request).

import { h, fill, field, guarded, showError, contentText } from './dom.js';

export function mount(root, { channel }, path) {
  const sel = { container: null, image: null, session: null };
  let images = [];
  let agentId = null;
  let busy = false;
  // The streaming reply: one bubble filled by text_delta, replaced by the stored message.
  let streaming = null;

  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const containerList = h('ul', { class: 'picker', 'aria-label': 'Containers' });
  const imageList = h('ul', { class: 'picker', 'aria-label': 'Images' });
  const sessionList = h('ul', { class: 'picker', 'aria-label': 'Sessions' });
  const newContainer = h('input', { name: 'containerId', placeholder: 'user-alice', required: true, pattern: '[A-Za-z0-9_.:\\-]+' });
  const containerForm = h('form', { class: 'inline' }, field('New container', newContainer), h('button', { type: 'submit' }, 'Add'));
  const imageButton = h('button', { type: 'button', disabled: true, onclick: () => openImageForm() }, 'New image');
  const sessionButton = h('button', { type: 'button', disabled: true, onclick: () => newSession() }, 'New session');
  const imageDialog = h('div', { class: 'image-form', hidden: true });

  const title = h('h2', { id: 'chat-title' }, 'No conversation selected');
  const log = h('div', { class: 'log', role: 'log', 'aria-live': 'polite', 'aria-labelledby': 'chat-title', tabindex: '0' });
  const input = h('textarea', { name: 'message', rows: 2, placeholder: 'Message… (Enter sends, Shift+Enter for a new line)', disabled: true, 'aria-label': 'Message' });
  const send = h('button', { type: 'submit', disabled: true }, 'Send');
  const interrupt = h('button', { type: 'button', class: 'danger', disabled: true, onclick: () => doInterrupt() }, 'Interrupt');
  const turnState = h('span', { class: 'turn-state', role: 'status' });
  const composer = h('form', { class: 'composer' }, input, h('div', { class: 'row' }, send, interrupt, turnState));

  root.append(
    h('div', { class: 'chat' },
      h('aside', { class: 'sidebar', 'aria-label': 'Conversations' },
        h('section', {}, h('h2', {}, 'Containers'), containerList, containerForm),
        h('section', {}, h('div', { class: 'section-head' }, h('h2', {}, 'Images'), imageButton), imageDialog, imageList),
        h('section', {}, h('div', { class: 'section-head' }, h('h2', {}, 'Sessions'), sessionButton), sessionList),
        error),
      h('section', { class: 'conversation', 'aria-labelledby': 'chat-title' }, title, log, composer)),
  );

  containerForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    guarded(error, async () => {
      const id = newContainer.value.trim();
      await channel.request('container_create_request', { containerId: id });
      newContainer.value = '';
      go(id);
    });
  });
  composer.addEventListener('submit', (ev) => {
    ev.preventDefault();
    doSend();
  });
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      doSend();
    }
  });

  const stop = channel.listen(onEvent);

  function go(container, image, session) {
    const parts = ['chat', container, image, session].filter(Boolean).map(encodeURIComponent);
    location.hash = '#/' + parts.join('/');
  }

  function pickerItem(label, current, onclick, extra) {
    return h('li', {}, h('button', { type: 'button', class: 'pick', 'aria-current': current ? 'true' : null, onclick }, label, extra ? h('small', {}, extra) : null));
  }

  async function update([container, image, session] = []) {
    await guarded(error, async () => {
      const { containerIds } = await channel.request('container_list_request');
      container = containerIds.includes(container) ? container : containerIds[0] || null;
      sel.container = container;
      fill(containerList, containerIds.length ? containerIds.map((c) => pickerItem(c, c === container, () => go(c))) : h('li', { class: 'empty' }, 'No container yet: add one below.'));
      imageButton.disabled = !container;
      if (!container) return selectSession(null);
      images = (await channel.request('image_list_request', { containerId: container })).records;
      image = images.find((i) => i.imageId === image)?.imageId || images[0]?.imageId || null;
      sel.image = image;
      fill(imageList, images.length ? images.map((i) => pickerItem(i.name, i.imageId === image, () => go(container, i.imageId), i.online ? 'running' : null)) : h('li', { class: 'empty' }, 'No image in this container.'));
      sessionButton.disabled = !image;
      if (!image) {
        fill(sessionList);
        return selectSession(null);
      }
      const { sessions } = await channel.request('session_list_request', { imageId: image });
      session = sessions.find((s) => s.sessionId === session)?.sessionId || sessions[0]?.sessionId || null;
      fill(sessionList, sessions.map((s, n) => pickerItem(s.title || `Session ${n + 1}`, s.sessionId === session, () => go(container, image, s.sessionId), shortTime(s.updatedAt))));
      await selectSession(session);
    });
  }

  async function selectSession(session) {
    if (session === sel.session && session) return;
    sel.session = session;
    agentId = null;
    streaming = null; // a reply of the previous session streams into nothing shown
    setBusy(false);
    log.replaceChildren();
    input.disabled = send.disabled = !session;
    const image = images.find((i) => i.imageId === sel.image);
    title.textContent = session ? `${image?.name ?? sel.image}` : 'No conversation selected';
    if (!session) return;
    channel.subscribe(session);
    const { messages } = await channel.request('session_messages_request', { sessionId: session });
    if (sel.session !== session) return;
    for (const m of messages) renderMessage(m);
    log.scrollTop = log.scrollHeight;
  }

  function openImageForm() {
    const name = h('input', { name: 'name', required: true, value: 'Assistant' });
    const prompt = h('textarea', { name: 'systemPrompt', rows: 3, placeholder: 'You are a helpful assistant.' });
    const model = h('input', { name: 'model', placeholder: 'the server default', list: 'model-hints' });
    const tools = h('input', { name: 'tools', placeholder: 'bash, read_file, write_file' });
    const mcp = h('textarea', { name: 'mcpServers', rows: 2, placeholder: '{"files": {"command": "mcp-files", "args": []}}', spellcheck: 'false' });
    const template = h('input', { name: 'sandboxTemplate', placeholder: 'none (local tools, if enabled)', list: 'template-hints' });
    const templateHints = h('datalist', { id: 'template-hints' });
    const formError = h('p', { class: 'error', role: 'alert', hidden: true });
    channel.request('template_list_request').then(({ templates }) => fill(templateHints, templates.map((t) => h('option', { value: t.id }, t.name))), () => {});
    const form = h('form', { class: 'card', 'aria-label': 'New image' },
      h('h3', {}, `New image in ${sel.container}`),
      field('Name', name),
      field('System prompt', prompt),
      field('Model', model, 'A model your LLM provider knows; with the mock provider, a scenario such as with-tool or slow-stream.'),
      h('datalist', { id: 'model-hints' }, ['default', 'multi-delta', 'with-tool', 'slow-stream', 'error'].map((m) => h('option', { value: m }))),
      field('Tools', tools, 'Built-in tools, comma-separated.'),
      field('MCP servers (JSON)', mcp, 'Optional: the servers whose tools the agent may call, as a JSON object.'),
      field('Sandbox template', template, "The container's agents run their tools in sandboxes of this template."),
      templateHints,
      formError,
      h('div', { class: 'row' }, h('button', { type: 'submit' }, 'Create image'), h('button', { type: 'button', class: 'quiet', onclick: () => { imageDialog.hidden = true; imageButton.focus(); } }, 'Cancel')));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      guarded(formError, async () => {
        if (template.value.trim()) {
          await channel.request('container_create_request', { containerId: sel.container, sandboxTemplate: template.value.trim() });
        }
        const config = { name: name.value.trim() };
        if (prompt.value.trim()) config.systemPrompt = prompt.value.trim();
        if (model.value.trim()) config.model = model.value.trim();
        const toolList = tools.value.split(',').map((t) => t.trim()).filter(Boolean);
        if (toolList.length) config.tools = toolList;
        if (mcp.value.trim()) {
          try {
            config.mcpServers = JSON.parse(mcp.value);
          } catch (e) {
            throw new Error(`MCP servers: not JSON (${e.message})`);
          }
        }
        const { record } = await channel.request('image_create_request', { containerId: sel.container, config });
        imageDialog.hidden = true;
        go(sel.container, record.imageId, record.sessionId);
      });
    });
    fill(imageDialog, form);
    imageDialog.hidden = false;
    name.focus();
  }

  async function newSession() {
    await guarded(error, async () => {
      const { session } = await channel.request('session_create_request', { imageId: sel.image });
      go(sel.container, sel.image, session.sessionId);
    });
  }

  async function doSend() {
    const text = input.value.trim();
    if (!text || !sel.session || busy) return;
    input.value = '';
    setBusy(true, 'Sending…');
    // Shown before the reply can stream in; it gets the stored message's id once answered.
    const mine = bubble('user', text);
    log.append(mine);
    scroll();
    try {
      const r = await channel.request('message_send_request', { sessionId: sel.session, content: text });
      agentId = r.agentId;
      if (r.messageId) mine.dataset.id = r.messageId;
    } catch (e) {
      mine.remove();
      setBusy(false);
      input.value = text;
      showError(error, e);
    }
  }

  async function doInterrupt() {
    await guarded(error, () => channel.request('agent_interrupt_request', agentId ? { agentId } : { sessionId: sel.session }));
  }

  function setBusy(on, label = '') {
    busy = on;
    interrupt.disabled = !on;
    send.disabled = on || !sel.session;
    turnState.textContent = label;
    log.setAttribute('aria-busy', on ? 'true' : 'false');
  }

  function onEvent(event) {
    if (!sel.session || event.context?.sessionId !== sel.session) return;
    const d = event.data || {};
    switch (event.type) {
      case 'conversation_start':
        setBusy(true, 'Thinking…');
        break;
      case 'text_delta':
        if (!streaming) {
          streaming = bubble('assistant', '');
          streaming.classList.add('streaming');
          log.append(streaming);
        }
        streaming.querySelector('.text').textContent += d.text;
        setBusy(true, 'Responding…');
        scroll();
        break;
      case 'tool_use_start':
        streaming = null;
        toolCard(d.toolCallId, d.toolName);
        scroll();
        break;
      case 'tool_use_stop':
        toolCard(d.toolCallId, d.toolName, d.input);
        break;
      case 'tool_result':
        toolResult(d.toolCallId, d.result, d.isError);
        scroll();
        break;
      case 'interrupted':
        log.append(h('p', { class: 'note' }, 'Interrupted.'));
        break;
      case 'assistant_message':
      case 'tool_call_message':
      case 'tool_result_message':
      case 'error_message':
        if (event.type === 'assistant_message' && streaming) {
          streaming.remove();
          streaming = null;
        }
        renderMessage(d);
        scroll();
        break;
      case 'conversation_end':
        streaming?.classList.remove('streaming');
        streaming = null;
        setBusy(false, d.reason && d.reason !== 'completed' ? `Turn ${d.reason}.` : '');
        break;
      default:
    }
  }

  function scroll() {
    log.scrollTop = log.scrollHeight;
  }

  function bubble(role, text, id) {
    return h('article', { class: `msg ${role}`, dataset: id ? { id } : {}, 'aria-label': role === 'user' ? 'You' : role === 'error' ? 'Error' : 'Assistant' },
      h('div', { class: 'who' }, role === 'user' ? 'You' : role === 'error' ? 'Error' : 'Assistant'),
      h('div', { class: 'text' }, text));
  }

  function renderMessage(m) {
    if (m.id && log.querySelector(`[data-id="${CSS.escape(m.id)}"]`)) return;
    switch (m.subtype) {
      case 'tool-call':
        toolCard(m.toolCall.id, m.toolCall.name, m.toolCall.input);
        break;
      case 'tool-result':
        toolResult(m.toolResult.toolCallId, m.toolResult.output, m.toolResult.isError, m.toolResult.name);
        break;
      case 'error':
        log.append(bubble('error', contentText(m.content), m.id));
        break;
      default: {
        const text = contentText(m.content);
        if (m.subtype === 'assistant' && !text) return;
        log.append(bubble(m.subtype === 'user' ? 'user' : 'assistant', text, m.id));
      }
    }
  }

  function toolCard(id, name, input) {
    let card = log.querySelector(`.tool[data-call="${CSS.escape(id)}"]`);
    if (!card) {
      card = h('article', { class: 'tool', dataset: { call: id }, 'aria-label': `Tool call ${name}` },
        h('div', { class: 'who' }, 'Tool call ', h('code', {}, name)),
        h('pre', { class: 'input' }, 'running…'),
        h('div', { class: 'result', hidden: true }));
      log.append(card);
    }
    if (input !== undefined) card.querySelector('.input').textContent = JSON.stringify(input, null, 2);
    return card;
  }

  function toolResult(id, output, isError, name = 'tool') {
    const card = toolCard(id, name);
    const result = card.querySelector('.result');
    result.hidden = false;
    card.classList.toggle('failed', !!isError);
    fill(result, h('div', { class: 'who' }, isError ? 'Failed' : 'Result'), h('pre', {}, output));
  }

  update(path);
  const unmount = () => stop();
  return { unmount, update };
}

/** A time of today as hh:mm, an older one as its date. */
function shortTime(ms) {
  const d = new Date(ms);
  return d.toDateString() === new Date().toDateString()
    ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : d.toLocaleDateString();
}
