// A terminal on a sandbox: `GET /v1/sandboxes/{id}/terminal` as a WebSocket (docs/sandboxes.md,
// "Terminal"). Binary frames carry the keys in and the output out; a text frame
// {"type":"resize","cols","rows"} gives the window size; the server ends with
// {"type":"exit","exitCode"} and a close.
//
// Why no terminal emulator: xterm.js would mean vendoring some 300 KB into the binary for
// full-screen programs (vi, top) that a console for agents' sandboxes rarely needs. A shell, its
// line editing and the output of commands need only what `Screen` does: text, \r, \n,
// backspace, tab, erasing to the end of the line, moving the cursor along it, clearing; every
// other escape sequence (colours, titles, queries) is recognised and dropped, so it never shows
// as garbage.

import { h, fill, field, showError, randomId } from './dom.js';

const SCROLLBACK_LINES = 2_000;

/** Keys that are not text, as the bytes a VT100-style terminal sends for them. */
const KEYS = {
  Enter: '\r',
  Backspace: '\x7f',
  Tab: '\t',
  Escape: '\x1b',
  ArrowUp: '\x1b[A',
  ArrowDown: '\x1b[B',
  ArrowRight: '\x1b[C',
  ArrowLeft: '\x1b[D',
  Home: '\x1b[H',
  End: '\x1b[F',
  Delete: '\x1b[3~',
  PageUp: '\x1b[5~',
  PageDown: '\x1b[6~',
};

/** What a key press sends, or null when the browser should handle it (text goes by `input`). */
export function keyBytes(ev) {
  if (ev.metaKey || ev.isComposing) return null;
  // Shift+Tab leaves the terminal: Tab itself is the shell's (completion), and the keyboard
  // must never be trapped.
  if (ev.key === 'Tab' && ev.shiftKey) return null;
  if (ev.ctrlKey && !ev.altKey && ev.key.length === 1) {
    const k = ev.key.toLowerCase();
    if (k === 'v') return null; // the browser's paste, which arrives as input
    const code = k.charCodeAt(0);
    if (code >= 97 && code <= 122) return String.fromCharCode(code - 96); // Ctrl-A … Ctrl-Z
    if ('[\\]^_'.includes(ev.key)) return String.fromCharCode(ev.key.charCodeAt(0) - 64);
    if (k === ' ' || k === '@') return '\x00';
    return null;
  }
  return KEYS[ev.key] ?? null;
}

/** The visible text of a terminal: lines, a cursor, and the escape sequences it obeys. */
export class Screen {
  constructor() {
    this.lines = [''];
    this.row = 0;
    this.col = 0;
    this.pending = ''; // an escape sequence cut between two frames
    this.home = false; // the cursor was just sent home: an erase that follows clears all
  }

  /** Applies output (a string of whole characters). */
  write(text) {
    const s = this.pending + text;
    this.pending = '';
    let i = 0;
    while (i < s.length) {
      const c = s[i];
      if (c === '\x1b') {
        const end = escapeEnd(s, i);
        if (end < 0) {
          this.pending = s.slice(i);
          break;
        }
        this.escape(s.slice(i, end));
        i = end;
        continue;
      }
      i++;
      this.home = false;
      if (c === '\r') this.col = 0;
      else if (c === '\n') this.lineFeed();
      else if (c === '\b') this.col = Math.max(0, this.col - 1);
      else if (c === '\t') this.put(' '.repeat(8 - (this.col % 8)));
      else if (c >= ' ' && c !== '\x7f') this.put(c);
      // other control characters (bell, shift in and out, …) have no visible effect
    }
    this.trim();
  }

  put(text) {
    const line = this.lines[this.row].padEnd(this.col, ' ');
    this.lines[this.row] = line.slice(0, this.col) + text + line.slice(this.col + text.length);
    this.col += text.length;
  }

  lineFeed() {
    this.row++;
    if (this.row === this.lines.length) this.lines.push('');
  }

  /** The CSI sequences a shell's line editing uses; every other sequence is dropped. */
  escape(seq) {
    const m = /^\x1b\[([0-9;?]*)([A-Za-z@])$/.exec(seq);
    if (!m) return;
    const n = Math.max(1, parseInt(m[1], 10) || 1);
    const line = this.lines[this.row];
    const home = this.home;
    this.home = false;
    switch (m[2]) {
      case 'C': this.col += n; break;
      case 'D': this.col = Math.max(0, this.col - n); break;
      case 'G': this.col = n - 1; break;
      case 'K': // erase in line: 0 to the end, 1 to the start, 2 all of it
        if (m[1] === '2') this.lines[this.row] = '';
        else if (m[1] === '1') this.lines[this.row] = ' '.repeat(this.col + 1) + line.slice(this.col + 1);
        else this.lines[this.row] = line.slice(0, this.col);
        break;
      case 'P': // delete characters at the cursor
        this.lines[this.row] = line.slice(0, this.col) + line.slice(this.col + n);
        break;
      case 'H': // cursor position: only "home", which `clear` and Ctrl-L send before an erase
        this.home = !m[1] || m[1] === '1;1';
        break;
      case 'J': // erase the screen: a scrollback has no screen to keep, so all of it goes
        if (home || m[1] === '2' || m[1] === '3') this.clear();
        else if (!m[1] || m[1] === '0') {
          this.lines.length = this.row + 1;
          this.lines[this.row] = line.slice(0, this.col);
        }
        break;
      default: // colours (m), cursor position queries (n), modes (h, l), …
    }
  }

  clear() {
    this.lines = [''];
    this.row = 0;
    this.col = 0;
    this.home = false;
    this.pending = '';
  }

  trim() {
    const extra = this.lines.length - SCROLLBACK_LINES;
    if (extra > 0) {
      this.lines.splice(0, extra);
      this.row = Math.max(0, this.row - extra);
    }
  }

  /** [text before the cursor, the character under it, text after it]. */
  parts() {
    const before = this.lines.slice(0, this.row);
    const line = this.lines[this.row].padEnd(this.col + 1, ' ');
    const after = this.lines.slice(this.row + 1);
    return [
      before.map((l) => l + '\n').join('') + line.slice(0, this.col),
      line[this.col],
      line.slice(this.col + 1).replace(/ +$/, '') + after.map((l) => '\n' + l).join(''),
    ];
  }
}

/** Where the escape sequence starting at `i` ends (exclusive), or -1 when it is cut short. */
function escapeEnd(s, i) {
  if (i + 1 >= s.length) return -1;
  const kind = s[i + 1];
  if (kind === '[') {
    for (let j = i + 2; j < s.length; j++) {
      const c = s.charCodeAt(j);
      if (c >= 0x40 && c <= 0x7e) return j + 1;
    }
    return -1;
  }
  if (kind === ']' || kind === 'P' || kind === '_' || kind === '^') {
    // OSC, DCS, APC, PM: up to BEL or ESC \
    for (let j = i + 2; j < s.length; j++) {
      if (s[j] === '\x07') return j + 1;
      if (s[j] === '\x1b' && j + 1 < s.length && s[j + 1] === '\\') return j + 2;
    }
    return -1;
  }
  if (kind === '(' || kind === ')' || kind === '#') return i + 3 <= s.length ? i + 3 : -1;
  return i + 2;
}

/**
 * The Terminal panel of one sandbox: an open/close button, the screen, the keyboard input,
 * and the state (open, the exit code). `element` goes into the page; `close()` ends it.
 */
export function terminalPanel(sandboxId, token) {
  const screen = new Screen();
  const outputId = randomId('term_out_');
  const output = h('pre', {
    id: outputId,
    class: 'terminal-screen',
    role: 'log',
    'aria-label': 'Terminal output',
    'aria-live': 'off', // a shell is too chatty to announce; the state line is announced
  });
  const keys = h('textarea', {
    class: 'terminal-keys',
    rows: 1,
    autocomplete: 'off',
    autocapitalize: 'off',
    autocorrect: 'off',
    spellcheck: 'false',
    'aria-controls': outputId,
    disabled: true,
  });
  const state = h('p', { class: 'note', role: 'status' }, 'Closed.');
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const boxId = randomId('term_');
  const toggle = h('button', { type: 'button', 'aria-expanded': 'false', 'aria-controls': boxId, onclick: () => (socket ? close() : open()) }, 'Open terminal');
  const keysField = field('Keys to the terminal', keys, 'Keys, Enter, Ctrl-C, arrows and paste go to the shell, Tab too; Shift+Tab leaves.');
  keysField.hidden = true;
  // A click on the screen types into it, unless it selected text to copy.
  const box = h('div', { id: boxId, class: 'terminal', hidden: true, onclick: () => { if (!keys.disabled && !getSelection().toString()) keys.focus(); } }, output, keysField);
  const element = h('div', { class: 'terminal-panel' }, h('div', { class: 'row' }, toggle, state), error, box);

  let socket = null;
  let size = null; // the last {cols, rows} sent
  let decoder = null; // UTF-8 of this socket's output
  const observer = new ResizeObserver(() => sendSize());

  function open() {
    screen.clear();
    render();
    decoder = new TextDecoder();
    delete state.dataset.exitCode;
    showError(error, null);
    box.hidden = false;
    keysField.hidden = false;
    keys.disabled = false;
    box.classList.add('live');
    size = measure();
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const query = new URLSearchParams({ cols: size.cols, rows: size.rows });
    // A browser cannot set headers on a WebSocket: the token goes in ?token=.
    if (token) query.set('token', token);
    const ws = new WebSocket(`${scheme}//${location.host}/v1/sandboxes/${encodeURIComponent(sandboxId)}/terminal?${query}`);
    ws.binaryType = 'arraybuffer';
    socket = ws;
    let opened = false;
    let exited = false;
    state.textContent = 'Connecting…';
    toggle.textContent = 'Close terminal';
    toggle.setAttribute('aria-expanded', 'true');
    ws.addEventListener('open', () => {
      opened = true;
      state.textContent = `Open: ${size.cols} × ${size.rows}.`;
      observer.observe(output);
      keys.focus();
    });
    ws.addEventListener('message', (m) => {
      if (typeof m.data !== 'string') {
        screen.write(decoder.decode(new Uint8Array(m.data), { stream: true }));
        render();
        return;
      }
      let frame;
      try {
        frame = JSON.parse(m.data);
      } catch {
        return;
      }
      if (frame.type === 'exit') {
        exited = true;
        state.textContent = frame.exitCode === null || frame.exitCode === undefined ? 'The shell ended.' : `The shell ended with exit code ${frame.exitCode}.`;
        state.dataset.exitCode = String(frame.exitCode);
      } else if (frame.type === 'error') {
        showError(error, `${frame.kind}: ${frame.error}`);
      }
    });
    ws.addEventListener('close', (e) => {
      if (socket !== ws) return;
      if (!opened) {
        showError(error, 'The terminal could not be opened: the sandbox may not be running, or it has as many terminals open as it may.');
        state.textContent = 'Closed.';
      } else if (!exited) {
        state.textContent = `Disconnected (${e.code}${e.reason ? ': ' + e.reason : ''}).`;
      }
      ended();
    });
  }

  function ended() {
    if (document.activeElement === keys) toggle.focus();
    socket = null;
    box.classList.remove('live');
    observer.disconnect();
    keys.disabled = true;
    keysField.hidden = true;
    toggle.textContent = 'Open terminal';
    toggle.setAttribute('aria-expanded', 'false');
  }

  function close() {
    const ws = socket;
    if (!ws) return;
    ended();
    state.textContent = 'Closed.';
    delete state.dataset.exitCode;
    ws.close(1000, 'closed in the console');
  }

  function send(bytes) {
    if (socket?.readyState === WebSocket.OPEN) socket.send(new TextEncoder().encode(bytes));
  }

  function render() {
    const [before, under, after] = screen.parts();
    fill(output, before, h('span', { class: 'terminal-cursor' }, under), after);
    output.scrollTop = output.scrollHeight;
  }

  /** The screen's size in character cells, from one character's measured box. */
  function measure() {
    const probe = h('span', { class: 'terminal-probe' }, 'M'.repeat(10));
    output.append(probe);
    const cell = probe.getBoundingClientRect();
    probe.remove();
    const style = getComputedStyle(output);
    const width = output.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    const height = output.clientHeight - parseFloat(style.paddingTop) - parseFloat(style.paddingBottom);
    const clamp = (n) => Math.min(1000, Math.max(1, Math.floor(n)));
    return { cols: clamp(width / (cell.width / 10 || 8)), rows: clamp(height / (cell.height || 16)) };
  }

  function sendSize() {
    if (socket?.readyState !== WebSocket.OPEN || box.hidden) return;
    const next = measure();
    if (size && next.cols === size.cols && next.rows === size.rows) return;
    size = next;
    socket.send(JSON.stringify({ type: 'resize', ...size }));
    state.textContent = `Open: ${size.cols} × ${size.rows}.`;
  }

  keys.addEventListener('keydown', (ev) => {
    const bytes = keyBytes(ev);
    if (bytes === null) return;
    ev.preventDefault();
    send(bytes);
  });
  // Text, typed or pasted (or from a phone's keyboard), arrives here; a newline is Enter.
  keys.addEventListener('input', (ev) => {
    if (ev.isComposing) return;
    flushText();
  });
  keys.addEventListener('compositionend', flushText);
  function flushText() {
    const text = keys.value;
    keys.value = '';
    if (text) send(text.replace(/\r?\n/g, '\r'));
  }

  return { element, close, sandboxId };
}
