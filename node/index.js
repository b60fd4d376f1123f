// agentvm for Node.js: the Promise API over the native module (agentvm.node).
//
// The native module moves commands, responses and events as the JSON of the Channel protocol
// (PROTOCOL.md); this file gives them their typed shape: vm.images.create(...),
// vm.events({sessionId}), vm.on(type, handler), vm.serve(...), connect(url), vm.scheduler().
// Types and documentation: index.d.ts.
'use strict'

const native = require('./agentvm.node')

/** The `code` of every error agentvm throws: the kind of the core's error. */
const ErrorCode = Object.freeze({
  NotFound: 'NotFound',
  AlreadyExists: 'AlreadyExists',
  InvalidInput: 'InvalidInput',
  Conflict: 'Conflict',
  Unavailable: 'Unavailable',
  Storage: 'Storage',
  Protocol: 'Protocol',
  Cancelled: 'Cancelled',
  Unauthorized: 'Unauthorized',
  Internal: 'Internal',
})

function invalidInput(message) {
  const e = new TypeError(message)
  e.code = ErrorCode.InvalidInput
  return e
}

/** Parses a native JSON answer, which is the value itself or a Promise of it. */
async function json(answer) {
  const text = typeof answer === 'string' ? answer : await answer
  return JSON.parse(text)
}

/** An async iterator over a native stream of JSON batches. */
class EventStream {
  /** @param {() => any} open returns the native stream or a Promise of it (may throw) */
  constructor(open) {
    this._buffer = []
    this._index = 0
    this._done = false
    try {
      this._native = open()
    } catch (e) {
      this._native = Promise.reject(e)
      this._native.catch(() => {})
    }
  }

  async _stream() {
    if (this._native && typeof this._native.then === 'function') {
      this._native = await this._native
    }
    return this._native
  }

  /** The next item, waiting for it; `{done: true}` once the stream ended or was closed. */
  async next() {
    if (this._index < this._buffer.length) {
      return { value: this._buffer[this._index++], done: false }
    }
    if (this._done) return { value: undefined, done: true }
    const stream = await this._stream()
    const answer = stream.nextBatch()
    const batch = typeof answer === 'string' || answer === null ? answer : await answer
    if (batch === null) {
      this._done = true
      return { value: undefined, done: true }
    }
    this._buffer = JSON.parse(batch)
    this._index = 1
    return { value: this._buffer[0], done: false }
  }

  /** Ends the stream (what `break` in `for await` calls). */
  async return() {
    await this.close()
    return { value: undefined, done: true }
  }

  /** Ends the stream and releases its subscription. */
  async close() {
    this._done = true
    this._buffer = []
    this._index = 0
    try {
      const stream = await this._stream()
      stream.close()
    } catch {
      // A stream that never opened has nothing to release.
    }
  }

  [Symbol.asyncIterator]() {
    return this
  }
}

/** Calls `handler(event)` for matching events from a native stream; weak (does not keep Node running). */
function listen(openStream, type, handler) {
  const matches = type === '*' ? () => true : (e) => e.type === type
  const dispatch = (batch) => {
    for (const event of JSON.parse(batch)) {
      if (!matches(event)) continue
      try {
        handler(event)
      } catch (err) {
        // Like an EventEmitter listener that throws: an uncaught exception, not a lost one.
        process.nextTick(() => {
          throw err
        })
      }
    }
  }
  let stream = null
  let closed = false
  const start = (s) => {
    stream = s
    if (closed) s.close()
    else s.listen(dispatch)
  }
  const opened = openStream()
  if (opened && typeof opened.then === 'function') {
    opened.then(start, (err) =>
      process.nextTick(() => {
        throw err
      }),
    )
  } else {
    start(opened)
  }
  return () => {
    closed = true
    if (stream) stream.close()
  }
}

function requestType(type) {
  if (typeof type !== 'string' || !type) throw invalidInput('request type must be a non-empty string')
  return type.endsWith('_request') ? type : `${type}_request`
}

function target(t, what) {
  if (typeof t === 'string') return { imageId: t }
  if (!t || typeof t !== 'object') throw invalidInput(`${what} needs {imageId}, {sessionId} or {agentId}`)
  const out = {}
  if (t.imageId !== undefined) out.imageId = t.imageId
  if (t.sessionId !== undefined) out.sessionId = t.sessionId
  if (t.agentId !== undefined) out.agentId = t.agentId
  return out
}

/** An agentvm runtime: local (from `open()`) or remote (from `connect()`), same API. */
class AgentVm {
  constructor(nativeRuntime) {
    this._native = nativeRuntime
    this._servers = new Set()
    const call = (type, data) => this._call(type, data)

    this.containers = Object.freeze({
      create: async (containerId) => (await call('container_create_request', { containerId })).containerId,
      get: (containerId) => call('container_get_request', { containerId }),
      exists: async (containerId) => (await call('container_get_request', { containerId })).exists,
      list: async () => (await call('container_list_request', {})).containerIds,
      delete: async (containerId) => (await call('container_delete_request', { containerId })).deleted,
    })

    this.images = Object.freeze({
      create: async (containerId, config = {}) =>
        (await call('image_create_request', { containerId, config })).record,
      build: async (containerId, definitionName, config = {}) =>
        (await call('image_build_request', { containerId, definitionName, config })).record,
      get: async (imageId) => (await call('image_get_request', { imageId })).record ?? null,
      list: async (containerId) =>
        (await call('image_list_request', containerId === undefined ? {} : { containerId })).records,
      update: async (imageId, updates) => (await call('image_update_request', { imageId, updates })).record,
      delete: async (imageId) => {
        await call('image_delete_request', { imageId })
      },
      run: (imageId) => call('image_run_request', { imageId }),
      stop: async (imageId) => {
        await call('image_stop_request', { imageId })
      },
      messages: async (imageId) => (await call('image_messages_request', { imageId })).messages,
    })

    this.sessions = Object.freeze({
      create: async (imageId, options = {}) =>
        (await call('session_create_request', { imageId, title: options.title })).session,
      list: async (imageId) => (await call('session_list_request', { imageId })).sessions,
      get: async (sessionId) => (await call('session_get_request', { sessionId })).session ?? null,
      update: async (sessionId, updates = {}) =>
        (await call('session_update_request', { sessionId, title: updates.title ?? null })).session,
      delete: async (sessionId) => {
        await call('session_delete_request', { sessionId })
      },
      resume: (sessionId) => call('session_resume_request', { sessionId }),
      messages: async (sessionId) => (await call('session_messages_request', { sessionId })).messages,
    })

    this.definitions = Object.freeze({
      register: async (definition) => (await call('definition_register_request', { definition })).replaced,
      list: async () => (await call('definition_list_request', {})).definitions,
      get: async (name) => (await call('definition_get_request', { name })).definition ?? null,
    })

    this.agents = Object.freeze({
      send: (message) => {
        if (!message || typeof message !== 'object') {
          return Promise.reject(invalidInput('send needs {imageId | sessionId | agentId, content}'))
        }
        return call('message_send_request', { ...target(message, 'send'), content: message.content })
      },
      ask: (message) => this._ask(message),
      interrupt: (t) => call('agent_interrupt_request', target(t, 'interrupt')),
      get: (agentId) => call('agent_get_request', { agentId }),
      list: async (containerId) =>
        (await call('agent_list_request', containerId === undefined ? {} : { containerId })).agents,
      destroy: async (agentId) => (await call('agent_destroy_request', { agentId })).success,
      destroyAll: async (containerId) => {
        await call('agent_destroy_all_request', { containerId })
      },
    })

    this.tokens = Object.freeze({
      create: (options = {}) => this._native.createToken(options.containerIds ?? null),
    })
  }

  async _ask(message) {
    if (!message || typeof message !== 'object') throw invalidInput('ask needs {imageId | sessionId | agentId, content}')
    let sessionId = message.sessionId
    if (!sessionId && message.imageId) {
      const image = await this.images.get(message.imageId)
      if (!image) return this.agents.send(message) // rejects with the NotFound of the protocol
      sessionId = image.sessionId
    }
    // Subscribe before sending, so even an instant reply is seen.
    const events = this.events(sessionId ? { sessionId } : { allSessions: true })
    try {
      const response = await this.agents.send(message)
      let reply = null
      for await (const e of events) {
        if (e.context?.sessionId !== response.sessionId) continue
        if (e.type === 'assistant_message' || e.type === 'error_message') reply = e.data
        if (e.type === 'conversation_end') return { response, reason: e.data.reason, message: reply }
      }
      const err = new Error('the event stream ended before the turn did (runtime closed?)')
      err.code = ErrorCode.Cancelled
      throw err
    } finally {
      await events.close()
    }
  }

  async _call(type, data) {
    return (await json(this._native.request(type, JSON.stringify(data)))).data
  }

  /** `"local"` or `"remote"`. */
  get kind() {
    return this._native.kind
  }

  /** Sends a raw command `{type, data}` and resolves with the response's data. */
  async request(command) {
    if (!command || typeof command !== 'object') throw invalidInput('request needs {type, data}')
    return this._call(requestType(command.type), command.data ?? {})
  }

  /** Interrupts the current turn of an image's (or an agent's) agent. */
  interrupt(t) {
    return this.agents.interrupt(t)
  }

  /** Events as an async iterator: `for await (const e of vm.events({sessionId}))`. */
  events(options) {
    return new EventStream(() => this._native.subscribe(options ?? null))
  }

  /** Calls `handler(event)` for every event of `type` (`'*'`: all); returns the unsubscribe function. */
  on(type, handler, options) {
    if (typeof type !== 'string') throw invalidInput('on(type, handler): type must be a string')
    if (typeof handler !== 'function') throw invalidInput('on(type, handler): handler must be a function')
    return listen(() => this._native.subscribe({ queue: 65536, ...(options ?? {}) }), type, handler)
  }

  /** Serves this runtime on `host:port` (WebSocket Channel at `/ws`). */
  async serve(options = {}) {
    const { scheduler, ...rest } = options
    const server = new Server(await this._native.serve(rest, scheduler ? scheduler._native : null), this)
    this._servers.add(server)
    return server
  }

  /** Opens the Docker sandbox scheduler on this runtime's repository and bus. */
  async scheduler(options = {}) {
    return new Scheduler(await this._native.scheduler(options))
  }

  /** Ends streams and listeners, closes servers, stops agents and releases the repository. */
  async close() {
    for (const s of this._servers) s._release()
    this._servers.clear()
    await this._native.close()
  }

  async [Symbol.asyncDispose]() {
    await this.close()
  }
}

/** A listening server. It keeps Node running until `close()` (or `unref()`). */
class Server {
  constructor(nativeServer, vm) {
    this._native = nativeServer
    this._vm = vm
    // The native server runs on the tokio runtime, which Node does not see: this handle is
    // what keeps the process alive while the server listens.
    this._keepAlive = setInterval(() => {}, 2 ** 31 - 1)
  }

  get port() {
    return this._native.port
  }

  get host() {
    return this._native.host
  }

  /** The WebSocket URL to `connect()` to. */
  get url() {
    const host = this.host.includes(':') ? `[${this.host}]` : this.host
    return `ws://${host}:${this.port}/ws`
  }

  /** Lets Node exit while the server listens. */
  unref() {
    this._keepAlive?.unref()
    return this
  }

  /** Keeps Node running while the server listens (the default). */
  ref() {
    this._keepAlive?.ref()
    return this
  }

  _release() {
    if (this._keepAlive) clearInterval(this._keepAlive)
    this._keepAlive = null
  }

  /** Stops accepting and lets running turns finish within the grace period. */
  async close() {
    this._release()
    this._vm?._servers.delete(this)
    await this._native.close()
  }
}

function execRequest(request) {
  if (typeof request === 'string') return { command: ['/bin/sh', '-c', request] }
  if (Array.isArray(request)) return { command: request }
  return request
}

/** The Docker sandbox scheduler: nodes, templates, sandboxes, exec and files. */
class Scheduler {
  constructor(nativeScheduler) {
    this._native = nativeScheduler
    const n = nativeScheduler
    this.nodes = Object.freeze({
      register: async (registration) => json(n.registerNode(JSON.stringify(registration))),
      list: async () => json(n.listNodes()),
      get: async (nodeId) => json(n.getNode(nodeId)),
      setStatus: async (nodeId, status) => json(n.setNodeStatus(nodeId, status)),
      remove: async (nodeId) => {
        await json(n.removeNode(nodeId))
      },
    })
    this.templates = Object.freeze({
      create: async (id, spec) => json(n.createTemplate(id, JSON.stringify(spec))),
      get: async (id) => json(n.getTemplate(id)),
      list: async () => json(n.listTemplates()),
      update: async (id, spec) => json(n.updateTemplate(id, JSON.stringify(spec))),
      delete: async (id) => {
        await json(n.deleteTemplate(id))
      },
    })
    this.sandboxes = Object.freeze({
      create: async (request) => json(n.createSandbox(JSON.stringify(typeof request === 'string' ? { templateId: request } : request))),
      get: async (id) => json(n.getSandbox(id)),
      list: async () => json(n.listSandboxes()),
      terminate: async (id) => json(n.terminateSandbox(id)),
      delete: async (id) => {
        await json(n.deleteSandbox(id))
      },
    })
    this.executions = Object.freeze({
      get: async (id) => json(n.getExecution(id)),
      list: async (sandboxId) => json(n.listExecutions(sandboxId)),
    })
    this.files = Object.freeze({
      write: async (sandboxId, path, data) =>
        n.writeFile(sandboxId, path, Buffer.isBuffer(data) ? data : Buffer.from(data)),
      read: async (sandboxId, path) => n.readFile(sandboxId, path),
      list: async (sandboxId, path = '.') => json(n.listFiles(sandboxId, path)),
    })
  }

  /** Runs a command (a shell string, an argv array or an ExecRequest) and resolves with the execution. */
  async exec(sandboxId, request) {
    return json(this._native.execCollect(sandboxId, JSON.stringify(execRequest(request))))
  }

  /** Runs a command and streams `{type:'output', stream, data}` chunks, then `{type:'finished', execution}`. */
  execStream(sandboxId, request) {
    return new EventStream(() => this._native.exec(sandboxId, JSON.stringify(execRequest(request))))
  }

  async metrics() {
    return json(this._native.metrics())
  }

  async sweep() {
    return json(this._native.sweep())
  }

  async reconcile() {
    return json(this._native.reconcile())
  }

  /** Releases this handle (sandboxes keep running: terminate them first). */
  close() {
    this._native.close()
  }
}

/** Opens an in-process runtime. */
async function open(options = {}) {
  return new AgentVm(await native.open(options))
}

/** Connects to an agentvm server (`ws://host:port/ws`); the runtime has the same API. */
async function connect(url, options = {}) {
  if (typeof url !== 'string') throw invalidInput('connect(url): url must be a ws:// URL string')
  return new AgentVm(await native.connect(url, options))
}

module.exports = {
  open,
  connect,
  AgentVm,
  Server,
  Scheduler,
  EventStream,
  ErrorCode,
  version: native.version,
}
