// Small DOM helpers shared by the views: build elements, show errors, format values.

/**
 * Builds an element: h('button', {class: 'x', onclick: fn}, 'text', child, ...).
 * Attributes starting with "on" become listeners; `null`/`false` attributes are left out.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A labelled form field: <label for> and the control, with an optional hint it points to. */
export function field(label, input, hint) {
  if (!input.id) input.id = randomId('f_');
  let hintEl = null;
  if (hint) {
    hintEl = h('small', { id: `${input.id}_hint` }, hint);
    input.setAttribute('aria-describedby', hintEl.id);
  }
  return h('div', { class: 'field' }, h('label', { for: input.id }, label), input, hintEl);
}

/** An error line in `el` (role=alert so screen readers announce it), or clears it. */
export function showError(el, error) {
  if (!error) {
    el.replaceChildren();
    el.hidden = true;
    return;
  }
  el.hidden = false;
  fill(el, String(error.message || error));
}

/** Runs `fn`, showing what it throws in `errorEl`; returns its result or undefined. */
export async function guarded(errorEl, fn) {
  showError(errorEl, null);
  try {
    return await fn();
  } catch (e) {
    showError(errorEl, e);
    return undefined;
  }
}

/** "3 s ago", "2 min ago", … */
export function age(ms) {
  if (ms === null || ms === undefined) return '—';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

/** A time as the browser's locale shows it. */
export function time(ms) {
  return ms ? new Date(ms).toLocaleString() : '—';
}

/** Bytes as "1.2 KiB". */
export function bytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

/** A random id with a prefix (`exec_…`), for ids the client chooses. */
export function randomId(prefix) {
  const b = crypto.getRandomValues(new Uint8Array(10));
  return prefix + Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

/** A table with a header row; `rows` are arrays of cells. */
export function table(caption, headers, rows, empty = 'None yet.') {
  if (!rows.length) return h('p', { class: 'empty' }, empty);
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      {},
      h('caption', { class: 'visually-hidden' }, caption),
      h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows.map((r) => h('tr', {}, r.map((c) => h('td', {}, c))))),
    ),
  );
}

/** Text of a message's content (a string, or parts of which the text ones are joined). */
export function contentText(content) {
  if (content === null || content === undefined) return '';
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .map((p) => (p.type === 'text' ? p.text : `[${p.type}${p.filename ? ': ' + p.filename : ''}]`))
      .join('');
  }
  return JSON.stringify(content);
}
