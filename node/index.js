// agentvm for Node.js: the Promise API over the native module (agentvm.node).
//
// The native module moves commands, responses and events as the JSON of the Channel protocol
// (PROTOCOL.md); this file gives them their typed shape: vm.images.create(...),
// vm.events({sessionId}), vm.on(type, handler), vm.serve(...), connect(url), vm.scheduler.
// The sandbox scheduler is commands like the rest: vm.scheduler sends them with vm.request.
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

/**
 * The `code` of a failed turn, from the provider's error code (`errorCode` of
 * `error_received` / `error_message`); any other code (`rate_limit`, `overloaded`, `timeout`,
 * `network`, `mock_error`, ...) or none is `Unavailable`: the model could not answer now.
 */
const TURN_ERROR_CODES = Object.freeze({
  not_configured: ErrorCode.Unavailable,
  authentication: ErrorCode.Unauthorized,
  invalid_request: ErrorCode.InvalidInput,
})

/** The Error of a turn that ended in error: `code` the kind, `errorCode` the provider's. */
function turnError(message, errorCode, response) {
  const e = new Error(message || 'the turn ended in error')
  e.code = TURN_ERROR_CODES[errorCode] ?? ErrorCode.Unavailable
  e.errorCode = errorCode ?? null
  e.response = response
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
      create: async (options = {}) => {
        // The token commands work remotely for operators; kept in-process as before.
        if (this.kind !== 'local') {
          throw invalidInput('tokens.create() runs in-process only: call it on the runtime from open(), not connect()')
        }
        return (await call('token_create_request', { containers: options.containerIds ?? null })).token
      },
    })

    /** The Docker sandbox scheduler (embedded with `open({scheduler})`, or the server's). */
    this.scheduler = new Scheduler(this)
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
      let failure = null
      for await (const e of events) {
        if (e.context?.sessionId !== response.sessionId) continue
        if (e.type === 'assistant_message') reply = e.data
        if (e.type === 'error_received') failure = { message: e.data.message, errorCode: e.data.errorCode }
        if (e.type === 'error_message' && !failure) failure = { message: e.data.content, errorCode: e.data.errorCode }
        if (e.type === 'conversation_end') {
          // An interrupted turn is not an error: it resolves with the partial reply, if any.
          if (e.data.reason === 'error') throw turnError(failure?.message, failure?.errorCode, response)
          return { response, reason: e.data.reason, message: reply }
        }
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

  /** Serves this runtime on `host:port` (WebSocket Channel at `/ws`, and the scheduler's routes). */
  async serve(options = {}) {
    const server = new Server(await this._native.serve(options), this)
    this._servers.add(server)
    return server
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

/** The data of a sandbox_exec_request: a shell script, an argv, or a full request. */
function execData(sandboxId, request) {
  if (typeof request === 'string') return { sandboxId, command: ['/bin/sh', '-c', request] }
  if (Array.isArray(request)) return { sandboxId, command: request }
  if (!request || typeof request !== 'object') {
    throw invalidInput('exec needs a shell string, an argv array or {command | code, ...}')
  }
  return { ...request, sandboxId }
}

function newExecutionId() {
  return `exec_${require('node:crypto').randomBytes(10).toString('hex')}`
}

/** After the execution's response, how long to wait for its last output events (they are
 * published before it, so they are normally queued already). */
const TAIL_WAIT_MS = 2000

/**
 * A command running in a sandbox: `for await` yields `{type:'output', stream, data}` as the
 * command writes, then `{type:'finished', execution}`. Subscribed to the sandbox's topic
 * before the command is sent; the command runs to its end even if nobody reads.
 */
class ExecStream {
  constructor(vm, data) {
    /** The execution's id (for `executions.cancel` and `executions.get`). */
    this.executionId = data.executionId
    /** The sandbox it runs in. */
    this.sandboxId = data.sandboxId
    /** The finished execution; null until the stream has ended. */
    this.execution = null
    this._events = vm.events({ sessionId: data.sandboxId })
    this._reading = null
    this._finished = false
    this._done = false
    // Send once subscribed (a remote runtime subscribes with a round trip).
    this._response = this._events
      ._stream()
      .then(() => vm._call('sandbox_exec_request', data))
      .then((d) => d.execution)
    this._settled = null
    this._response.then(
      () => (this._settled = 'ok'),
      () => (this._settled = 'failed'),
    )
  }

  async next() {
    if (this._done) return { value: undefined, done: true }
    try {
      while (!this._finished) {
        if (this._settled === 'failed') await this._response // throws its error
        if (!this._reading) this._reading = this._events.next()
        let winner
        if (this._settled === null) {
          winner = await Promise.race([
            this._reading.then((r) => ({ r })),
            this._response.then(
              () => null,
              () => null,
            ),
          ])
          if (winner === null) continue // the response came first: see above
        } else {
          let timer
          const tail = new Promise((resolve) => {
            timer = setTimeout(() => resolve(null), TAIL_WAIT_MS)
          })
          winner = await Promise.race([this._reading.then((r) => ({ r })), tail])
          clearTimeout(timer)
          if (winner === null) break
        }
        this._reading = null
        if (winner.r.done) break
        const e = winner.r.value
        const d = e.data ?? {}
        if (d.executionId !== this.executionId) continue
        if (e.type === 'sandbox_exec_output') {
          return { value: { type: 'output', stream: d.stream, data: d.data }, done: false }
        }
        if (e.type === 'sandbox_exec_finished') this._finished = true
      }
      this.execution = await this._response
      this._done = true
      await this._events.close()
      return { value: { type: 'finished', execution: this.execution }, done: false }
    } catch (err) {
      this._done = true
      await this._events.close()
      throw err
    }
  }

  /** Stops reading (what `break` in `for await` calls); the command goes on running. */
  async return() {
    this._done = true
    await this._events.close()
    return { value: undefined, done: true }
  }

  /** Reads the rest of the output and resolves with the finished execution. */
  async wait() {
    for await (const item of this) {
      if (item.type === 'finished') return item.execution
    }
    if (this.execution) return this.execution
    throw invalidInput('the stream was closed before the execution finished')
  }

  [Symbol.asyncIterator]() {
    return this
  }
}

function fileContent(data) {
  if (typeof data === 'string') return { content: data, encoding: 'utf8' }
  if (data instanceof Uint8Array) return { content: Buffer.from(data).toString('base64'), encoding: 'base64' }
  throw invalidInput('file data must be a string, a Buffer or a Uint8Array')
}

/**
 * The Docker sandbox scheduler of a runtime (`vm.scheduler`). Every method is one command
 * (docs/commands.md); a runtime opened without `scheduler` answers them with `Unavailable`.
 * Records have the shapes of the REST API under `/v1`.
 */
class Scheduler {
  constructor(vm) {
    const call = (type, data) => vm._call(type, data)
    this._vm = vm
    this.nodes = Object.freeze({
      register: async (registration) => (await call('node_register_request', registration)).node,
      heartbeat: async (heartbeat) =>
        (await call('node_heartbeat_request', typeof heartbeat === 'string' ? { nodeId: heartbeat } : heartbeat)).node,
      list: async () => (await call('node_list_request', {})).nodes,
      get: async (nodeId) => (await call('node_get_request', { nodeId })).node ?? null,
      setStatus: async (nodeId, status) => (await call('node_update_request', { nodeId, status })).node,
      remove: async (nodeId) => {
        await call('node_delete_request', { nodeId })
      },
    })
    this.templates = Object.freeze({
      create: async (templateId, spec) => (await call('template_create_request', { ...spec, templateId })).template,
      get: async (templateId) => (await call('template_get_request', { templateId })).template ?? null,
      list: async () => (await call('template_list_request', {})).templates,
      update: async (templateId, spec) => (await call('template_update_request', { ...spec, templateId })).template,
      delete: async (templateId) => {
        await call('template_delete_request', { templateId })
      },
    })
    this.sandboxes = Object.freeze({
      create: async (request) =>
        (await call('sandbox_create_request', typeof request === 'string' ? { templateId: request } : request)).sandbox,
      get: async (sandboxId) => (await call('sandbox_get_request', { sandboxId })).sandbox ?? null,
      list: async (options = {}) => (await call('sandbox_list_request', options.owner ? { owner: options.owner } : {})).sandboxes,
      terminate: async (sandboxId) => (await call('sandbox_terminate_request', { sandboxId })).sandbox,
      delete: async (sandboxId) => {
        await call('sandbox_delete_request', { sandboxId })
      },
    })
    this.executions = Object.freeze({
      get: async (executionId) => (await call('execution_get_request', { executionId })).execution ?? null,
      list: async (sandboxId) => (await call('execution_list_request', { sandboxId })).executions,
      cancel: async (executionId) => (await call('sandbox_exec_cancel_request', { executionId })).execution,
    })
    this.files = Object.freeze({
      write: async (sandboxId, path, data) => {
        await call('sandbox_file_write_request', { sandboxId, path, ...fileContent(data) })
      },
      read: async (sandboxId, path) =>
        Buffer.from((await call('sandbox_file_read_request', { sandboxId, path, encoding: 'base64' })).content, 'base64'),
      list: async (sandboxId, path) =>
        (await call('sandbox_file_list_request', path === undefined ? { sandboxId } : { sandboxId, path })).files,
      delete: async (sandboxId, path, options = {}) => {
        await call('sandbox_file_delete_request', options.recursive ? { sandboxId, path, recursive: true } : { sandboxId, path })
      },
    })
  }

  /**
   * Starts a command (a shell string, an argv array or `{command | code, language?, env?,
   * workdir?, timeoutMs?, executionId?}`) and streams its output: `for await (const e of
   * vm.scheduler.exec(id, 'make'))`. `await stream.wait()` resolves with the execution.
   */
  exec(sandboxId, request) {
    const data = execData(sandboxId, request)
    if (data.executionId === undefined) data.executionId = newExecutionId()
    return new ExecStream(this._vm, data)
  }

  /** Runs a command to its end and resolves with the execution (no streaming). */
  async run(sandboxId, request) {
    return (await this._vm._call('sandbox_exec_request', execData(sandboxId, request))).execution
  }

  /** Counters and gauges (pool hits, cold starts, live sandboxes, nodes online, ...). */
  async metrics() {
    return (await this._vm._call('scheduler_metrics_request', {})).metrics
  }
}

/** Opens an in-process runtime; `scheduler` (an object of the core's scheduler options) embeds the sandbox scheduler. */
async function open(options = {}) {
  const { scheduler, ...rest } = options ?? {}
  if (scheduler !== undefined && scheduler !== null) rest.scheduler = JSON.stringify(scheduler)
  return new AgentVm(await native.open(rest))
}

/**
 * Connects to an agentvm server (`ws://host:port/ws`); the runtime has the same API. An array of
 * URLs (the servers of one cluster) connects to the first that answers and fails over to the
 * next in turn when the connection drops.
 */
async function connect(url, options = {}) {
  if (Array.isArray(url)) {
    if (!url.every((u) => typeof u === 'string')) throw invalidInput('connect(urls): every URL must be a ws:// URL string')
    return new AgentVm(await native.connect('', { ...options, urls: url }))
  }
  if (typeof url !== 'string') throw invalidInput('connect(url): url must be a ws:// URL string or an array of them')
  return new AgentVm(await native.connect(url, options))
}

module.exports = {
  open,
  connect,
  AgentVm,
  Server,
  Scheduler,
  ExecStream,
  EventStream,
  ErrorCode,
  version: native.version,
}
