// The Channel client (docs/protocol.md): one WebSocket to /ws, requests matched to their
// responses by requestId, reliable frames acknowledged, session and sandbox topics joined and
// re-joined after a reconnect from the last cursor seen.

const REQUEST_TIMEOUT_MS = 120_000;

export class Channel {
  /** @param {string|null} token a bearer token, or null (a server with auth off). */
  constructor(token) {
    this.token = token;
    this.pending = new Map(); // requestId -> {resolve, reject, timer}
    this.listeners = new Set(); // fn(event, cursor)
    this.statusListeners = new Set(); // fn('open' | 'closed' | 'connecting', detail)
    this.topics = new Map(); // topic -> last cursor seen (or null)
    this.socket = null;
    this.closed = false;
    this.retryMs = 500;
    this.opened = null;
  }

  /** Connects; resolves once the socket is open, rejects if the first attempt fails. */
  connect() {
    this.opened = new Promise((resolve, reject) => this.open(resolve, reject));
    return this.opened;
  }

  open(resolve, reject) {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    // Browsers cannot set headers on a WebSocket: the token goes in ?token= (protocol.md §1).
    const query = this.token ? `?token=${encodeURIComponent(this.token)}` : '';
    const socket = new WebSocket(`${scheme}//${location.host}/ws${query}`);
    this.socket = socket;
    this.emitStatus('connecting');
    socket.addEventListener('open', () => {
      this.retryMs = 500;
      this.emitStatus('open');
      for (const [topic, cursor] of this.topics) this.sendSubscribe(topic, cursor);
      resolve?.();
      resolve = reject = null;
    });
    socket.addEventListener('message', (m) => this.receive(m.data));
    socket.addEventListener('close', (e) => {
      for (const [, p] of this.pending) {
        clearTimeout(p.timer);
        p.reject(new Error(`connection closed (${e.code}${e.reason ? ': ' + e.reason : ''})`));
      }
      this.pending.clear();
      this.emitStatus('closed', e);
      if (reject) {
        reject(new Error(e.reason || `cannot connect to /ws (${e.code})`));
        resolve = reject = null;
        return;
      }
      // 1008: the token was refused or revoked; reconnecting would only be refused again.
      if (!this.closed && e.code !== 1008) {
        setTimeout(() => !this.closed && this.open(), this.retryMs);
        this.retryMs = Math.min(this.retryMs * 2, 10_000);
      }
    });
  }

  close() {
    this.closed = true;
    this.socket?.close(1000, 'signed out');
  }

  receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    let event = frame;
    let cursor = null;
    if (frame.__msgId !== undefined) {
      this.socket?.send(JSON.stringify({ __ack: frame.__msgId }));
      try {
        event = JSON.parse(frame.__payload);
      } catch {
        return;
      }
      cursor = frame.__cursor ?? null;
    }
    const topic = event.context?.sessionId ?? (event.source === 'sandbox' ? event.data?.sandboxId : null);
    if (cursor !== null && topic && this.topics.has(topic)) this.topics.set(topic, cursor);
    const requestId = event.data?.requestId;
    if (requestId && event.type?.endsWith('_response') && this.pending.has(requestId)) {
      const p = this.pending.get(requestId);
      this.pending.delete(requestId);
      clearTimeout(p.timer);
      if (event.data.error) {
        const e = new Error(event.data.error);
        e.kind = event.data.errorKind;
        p.reject(e);
      } else {
        p.resolve(event.data);
      }
    }
    for (const fn of this.listeners) {
      try {
        fn(event, cursor);
      } catch (e) {
        console.error(e);
      }
    }
  }

  /** Sends a command (`container_list_request`, …); resolves with the response's data. */
  async request(type, data = {}) {
    await this.opened;
    const requestId = `req_${Date.now()}_${Math.random().toString(36).slice(2, 8)}`;
    const envelope = {
      type,
      timestamp: Date.now(),
      data: { ...data, requestId },
      source: 'command',
      category: 'request',
      intent: 'request',
    };
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(requestId);
        reject(new Error(`${type}: no answer in ${REQUEST_TIMEOUT_MS / 1000} s`));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(requestId, { resolve, reject, timer });
      if (this.socket?.readyState !== WebSocket.OPEN) {
        this.pending.delete(requestId);
        clearTimeout(timer);
        reject(new Error('not connected'));
        return;
      }
      this.socket.send(JSON.stringify(envelope));
    });
  }

  /** Joins a session or sandbox topic (kept across reconnects). */
  subscribe(topic) {
    if (this.topics.has(topic)) return;
    this.topics.set(topic, null);
    if (this.socket?.readyState === WebSocket.OPEN) this.sendSubscribe(topic, null);
  }

  sendSubscribe(topic, cursor) {
    const frame = { type: 'subscribe', sessionId: topic };
    if (cursor) frame.afterCursor = cursor;
    this.socket.send(JSON.stringify(frame));
  }

  /** Calls `fn(event, cursor)` for every event; returns a function that stops it. */
  listen(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  onStatus(fn) {
    this.statusListeners.add(fn);
    return () => this.statusListeners.delete(fn);
  }

  emitStatus(status, detail) {
    for (const fn of this.statusListeners) fn(status, detail);
  }
}

/** A REST or plain HTTP call with the token; throws the server's `{"error"}` message. */
export async function http(token, path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body.error) message = body.error;
    } catch {
      // not JSON: keep the status line
    }
    const e = new Error(message);
    e.status = response.status;
    throw e;
  }
  return response;
}
