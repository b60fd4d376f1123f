// agentvm for Node.js: the Promise API over the native module (agentvm.node).
//
// The native module only converts between JavaScript and agentvm-embed: options go to embed
// as JSON text (embed parses and checks them: dataDir, llm, scheduler, limits, localTools,
// definitions, maxTokens; sessions, allSessions, global, queue; addr, auth; url, token,
// timeoutMs), a command `{type, data}` goes in as JSON text and the response's data comes back
// as JSON text, events come in batches of JSON. This file gives that its Promise shape:
// vm.request(command) for any command, groups of convenience methods that are each one
// command (the COMMANDS table), vm.events() / vm.on(), vm.agents.ask(), vm.scheduler.exec(),
// vm.serve(), connect(url). Types and documentation: index.d.ts.
'use strict'

const native = require('./agentvm.node')

/** The `code` of every error agentvm throws: the kind of the core's error, in PascalCase. */
const ErrorCode = Object.freeze({
  NotFound: 'NotFound',
  AlreadyExists: 'AlreadyExists',
  InvalidInput: 'InvalidInput',
  Conflict: 'Conflict',
  Unavailable: 'Unavailable',
  Storage: 'Storage',
  StorageFull: 'StorageFull',
  Protocol: 'Protocol',
  Cancelled: 'Cancelled',
  Unauthorized: 'Unauthorized',
  Internal: 'Internal',
})

/** The `kind` of a `code`: embed's stable snake_case kind (`not_found`, ...). */
const kindOf = (code) => code.replace(/[A-Z]/g, (c, i) => (i ? '_' : '') + c.toLowerCase())
/** The `code` of a `kind`: `not_found` → `NotFound`. */
const codeOf = (kind) => kind.replace(/(?:^|_)([a-z])/g, (_, c) => c.toUpperCase())

function agentError(code, message, Type = Error) {
  const e = new Type(message)
  e.kind = kindOf(code)
  e.code = code
  return e
}

const invalidInput = (message) => agentError(ErrorCode.InvalidInput, message, TypeError)

/**
 * The Error of a turn that ended in error: `kind` is the core's (`errorKind` of its
 * `error_received` event; `unavailable` when the turn ended without one), `errorCode` the
 * provider's.
 */
function turnError(failure, response) {
  const code = codeOf(failure?.errorKind ?? 'unavailable')
  const e = agentError(code, failure?.message || 'the turn ended in error')
  e.errorCode = failure?.errorCode ?? null
  e.response = response
  return e
}

/** Options as the JSON text embed parses (`undefined`/`null`: the defaults). */
const optionsJson = (options) => (options === undefined || options === null ? undefined : JSON.stringify(options))

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
    }
    if (this._native && typeof this._native.then === 'function') this._native.catch(() => {})
  }

  async _stream() {
    if (this._native && typeof this._native.then === 'function') {
      this._native = await this._native
    }
    return this._native
  }

  /** The next event, waiting for it; `{done: true}` once the stream ended or was closed. */
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

  /**
   * The next batch of events (an array, at least one), waiting at most `timeoutMs` for the
   * first; `null` when the time ran out or the stream ended. Faster than one event at a time.
   */
  async nextBatch(options = {}) {
    if (this._index < this._buffer.length) {
      const rest = this._buffer.slice(this._index)
      this._buffer = []
      this._index = 0
      return rest
    }
    if (this._done) return null
    const stream = await this._stream()
    const answer = stream.nextBatch(options.max, options.timeoutMs)
    const batch = typeof answer === 'string' || answer === null ? answer : await answer
    if (batch === null) {
      if (stream.ended) this._done = true
      return null
    }
    return JSON.parse(batch)
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

/** Calls `handler(event)` for matching events pushed by a native stream; weak (does not keep Node running). */
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

/** `image_get` or `image_get_request` → `image_get_request`. */
function requestType(type) {
  if (typeof type !== 'string' || !type) throw invalidInput('request type must be a non-empty string')
  return type.endsWith('_request') ? type : `${type}_request`
}

/** The target of a message or an interrupt: an image id, or `{imageId | sessionId | agentId}`. */
function target(t, what) {
  if (typeof t === 'string') return { imageId: t }
  if (!t || typeof t !== 'object') throw invalidInput(`${what} needs {imageId}, {sessionId} or {agentId}`)
  const { imageId, sessionId, agentId } = t
  return { imageId, sessionId, agentId }
}

function fileContent(data) {
  if (typeof data === 'string') return { content: data, encoding: 'utf8' }
  if (data instanceof Uint8Array) return { content: Buffer.from(data).toString('base64'), encoding: 'base64' }
  throw invalidInput('file data must be a string, a Buffer or a Uint8Array')
}

/** The data of a sandbox_exec_request: a shell script, an argv, or a full request. */
function execData(sandboxId, request) {
  // A string runs with /bin/sh -c: the core reads either form.
  if (typeof request === 'string' || Array.isArray(request)) return { sandboxId, command: request }
  if (!request || typeof request !== 'object') {
    throw invalidInput('exec needs a shell string, an argv array or {command | code, ...}')
  }
  return { ...request, sandboxId }
}

const id = (name) => (value) => ({ [name]: value })
const optional = (name) => (value) => (value === undefined ? {} : { [name]: value })
const none = () => ({})
/** The page options of a messages request: `{limit, after, before}`, as given. */
const pageOf = ({ limit, after, before } = {}) => ({ limit, after, before })

/**
 * The convenience methods: every one is exactly one command (docs/commands.md), described as
 * `[command, arguments → data, what to return]`; the last is a field of the response's data
 * (`'record?'`: that field or null), `null` for nothing, absent for the whole data. Commands
 * without an entry are reached with `vm.request({type, data})`; nothing here is native code.
 */
const COMMANDS = {
  containers: {
    create: ['container_create', id('containerId'), 'containerId'],
    get: ['container_get', id('containerId')],
    exists: ['container_get', id('containerId'), 'exists'],
    list: ['container_list', none, 'containerIds'],
    delete: ['container_delete', id('containerId'), 'deleted'],
  },
  images: {
    create: ['image_create', (containerId, config = {}) => ({ containerId, config }), 'record'],
    build: ['image_build', (containerId, definitionName, config = {}) => ({ containerId, definitionName, config }), 'record'],
    get: ['image_get', id('imageId'), 'record?'],
    list: ['image_list', optional('containerId'), 'records'],
    update: ['image_update', (imageId, updates) => ({ imageId, updates }), 'record'],
    delete: ['image_delete', id('imageId'), null],
    run: ['image_run', id('imageId')],
    stop: ['image_stop', id('imageId'), null],
    messages: ['image_messages', (imageId, page = {}) => ({ imageId, ...pageOf(page) }), 'messages'],
    messagesPage: ['image_messages', (imageId, page = {}) => ({ imageId, ...pageOf(page) })],
  },
  sessions: {
    create: ['session_create', (imageId, options = {}) => ({ imageId, title: options.title }), 'session'],
    list: ['session_list', id('imageId'), 'sessions'],
    get: ['session_get', id('sessionId'), 'session?'],
    update: ['session_update', (sessionId, updates = {}) => ({ sessionId, title: updates.title ?? null }), 'session'],
    delete: ['session_delete', id('sessionId'), null],
    resume: ['session_resume', id('sessionId')],
    messages: ['session_messages', (sessionId, page = {}) => ({ sessionId, ...pageOf(page) }), 'messages'],
    messagesPage: ['session_messages', (sessionId, page = {}) => ({ sessionId, ...pageOf(page) })],
  },
  definitions: {
    register: ['definition_register', id('definition'), 'replaced'],
    list: ['definition_list', none, 'definitions'],
    get: ['definition_get', id('name'), 'definition?'],
  },
  agents: {
    send: ['message_send', (m) => ({ ...target(m, 'send'), content: m.content })],
    interrupt: ['agent_interrupt', (t) => target(t, 'interrupt')],
    get: ['agent_get', id('agentId')],
    list: ['agent_list', optional('containerId'), 'agents'],
    destroy: ['agent_destroy', id('agentId'), 'success'],
    destroyAll: ['agent_destroy_all', id('containerId'), null],
  },
  tokens: {
    create: ['token_create', (o = {}) => (o.all ? { all: true } : { containers: o.containerIds ?? null }), 'token'],
  },
}

/** The scheduler's groups (`vm.scheduler.*`), the same pattern. */
const SCHEDULER_COMMANDS = {
  nodes: {
    register: ['node_register', (registration) => registration, 'node'],
    heartbeat: ['node_heartbeat', (h) => (typeof h === 'string' ? { nodeId: h } : h), 'node'],
    list: ['node_list', none, 'nodes'],
    get: ['node_get', id('nodeId'), 'node?'],
    setStatus: ['node_update', (nodeId, status) => ({ nodeId, status }), 'node'],
    remove: ['node_delete', id('nodeId'), null],
  },
  templates: {
    create: ['template_create', (templateId, spec) => ({ ...spec, templateId }), 'template'],
    get: ['template_get', id('templateId'), 'template?'],
    list: ['template_list', none, 'templates'],
    update: ['template_update', (templateId, spec) => ({ ...spec, templateId }), 'template'],
    delete: ['template_delete', id('templateId'), null],
  },
  sandboxes: {
    create: ['sandbox_create', (r) => (typeof r === 'string' ? { templateId: r } : r), 'sandbox'],
    get: ['sandbox_get', id('sandboxId'), 'sandbox?'],
    list: ['sandbox_list', (o = {}) => (o.owner ? { owner: o.owner } : {}), 'sandboxes'],
    terminate: ['sandbox_terminate', id('sandboxId'), 'sandbox'],
    delete: ['sandbox_delete', id('sandboxId'), null],
  },
  executions: {
    get: ['execution_get', id('executionId'), 'execution?'],
    list: ['execution_list', id('sandboxId'), 'executions'],
    cancel: ['sandbox_exec_cancel', id('executionId'), 'execution'],
  },
  files: {
    write: ['sandbox_file_write', (sandboxId, path, data) => ({ sandboxId, path, ...fileContent(data) }), null],
    read: ['sandbox_file_read', (sandboxId, path) => ({ sandboxId, path, encoding: 'base64' }), (d) => Buffer.from(d.content, 'base64')],
    list: ['sandbox_file_list', (sandboxId, path) => (path === undefined ? { sandboxId } : { sandboxId, path }), 'files'],
    delete: [
      'sandbox_file_delete',
      (sandboxId, path, options = {}) => (options.recursive ? { sandboxId, path, recursive: true } : { sandboxId, path }),
      null,
    ],
  },
}

/** The function that picks the answer of a convenience method from the response's data. */
function picker(pick) {
  if (pick === undefined) return (data) => data
  if (pick === null) return () => undefined
  if (typeof pick === 'function') return pick
  if (pick.endsWith('?')) {
    const field = pick.slice(0, -1)
    return (data) => data[field] ?? null
  }
  return (data) => data[pick]
}

/**
 * Sends `{type, data}` on a native runtime; resolves with `answer(data of the response)`.
 * The native call answers at once (a string) when the command finished on its first poll,
 * else with a Promise of the string.
 */
function send(nativeRuntime, type, data, answer) {
  let text
  try {
    // `type` is a command name (no characters to escape): only `data` needs JSON.stringify.
    text = nativeRuntime.request(`{"type":"${type}","data":${JSON.stringify(data ?? {})}}`)
  } catch (e) {
    return Promise.reject(e)
  }
  if (typeof text === 'string') {
    try {
      return Promise.resolve(answer(JSON.parse(text)))
    } catch (e) {
      return Promise.reject(e)
    }
  }
  return text.then((t) => answer(JSON.parse(t)))
}

const whole = (data) => data

/**
 * Every message of a history, oldest first, one page request at a time (`pageSize` messages
 * per request, 100 unless given): follows `nextCursor` while `hasMore`. An async iterator.
 */
async function* everyPage(page, { pageSize } = {}) {
  let after
  for (;;) {
    const answer = await page({ limit: pageSize, after })
    yield* answer.messages
    if (!answer.hasMore || answer.nextCursor == null) return
    after = answer.nextCursor
  }
}

/** Builds the frozen groups of `table` as methods sending their command to `vm`. */
function groups(table, vm) {
  const out = {}
  for (const [group, methods] of Object.entries(table)) {
    const g = {}
    for (const [name, [command, toData, pick]] of Object.entries(methods)) {
      const type = `${command}_request`
      const answer = picker(pick)
      g[name] = (...args) => {
        let data
        try {
          data = toData(...args)
        } catch (e) {
          return Promise.reject(e)
        }
        return send(vm._native, type, data, answer)
      }
    }
    out[group] = Object.freeze(g)
  }
  return out
}

/** Cancel ids of this process's requests with an AbortSignal. */
let nextCancelId = 1

/** An agentvm runtime: local (from `open()`) or remote (from `connect()`), same API. */
class AgentVm {
  constructor(nativeRuntime) {
    this._native = nativeRuntime
    this._servers = new Set()
    Object.assign(this, groups(COMMANDS, this))
    this.agents = Object.freeze({ ...this.agents, ask: (message) => this._ask(message) })
    this.images = Object.freeze({
      ...this.images,
      history: (imageId, options = {}) => everyPage((page) => this.images.messagesPage(imageId, page), options),
    })
    this.sessions = Object.freeze({
      ...this.sessions,
      history: (sessionId, options = {}) => everyPage((page) => this.sessions.messagesPage(sessionId, page), options),
    })
    /** The Docker sandbox scheduler (embedded with `open({scheduler})`, or the server's). */
    this.scheduler = new Scheduler(this)
  }

  /** Sends `{type, data}` and resolves with the response's data. */
  _send(type, data, options) {
    if (options === undefined) return send(this._native, type, data, whole)
    let command
    try {
      command = JSON.stringify({ type, data })
    } catch (e) {
      return Promise.reject(e)
    }
    return this._sendWith(command, options)
  }

  async _sendWith(command, { timeoutMs, signal }) {
    if (signal?.aborted) throw agentError(ErrorCode.Cancelled, 'cancelled by the caller (AbortSignal)')
    const cancelId = signal ? nextCancelId++ : undefined
    if (nextCancelId > 0xffff_fff0) nextCancelId = 1
    const abort = () => this._native.cancel(cancelId)
    signal?.addEventListener('abort', abort, { once: true })
    try {
      return JSON.parse(await this._native.request(command, timeoutMs, cancelId))
    } finally {
      signal?.removeEventListener('abort', abort)
    }
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
    const events = this.events(sessionId ? { sessions: [{ sessionId }] } : { allSessions: true })
    try {
      const response = await this.agents.send(message)
      let reply = null
      let failure = null
      for await (const e of events) {
        if (e.context?.sessionId !== response.sessionId) continue
        if (e.type === 'assistant_message') reply = e.data
        if (e.type === 'error_received') {
          failure = { message: e.data.message, errorCode: e.data.errorCode, errorKind: e.data.errorKind }
        }
        if (e.type === 'error_message' && !failure) failure = { message: e.data.content, errorCode: e.data.errorCode }
        if (e.type === 'conversation_end') {
          // An interrupted turn is not an error: it resolves with the partial reply, if any.
          if (e.data.reason === 'error') throw turnError(failure, response)
          return { response, reason: e.data.reason, message: reply }
        }
      }
      throw agentError(ErrorCode.Cancelled, 'the event stream ended before the turn did (runtime closed?)')
    } finally {
      await events.close()
    }
  }

  /** `"local"` or `"remote"`. */
  get kind() {
    return this._native.kind
  }

  /**
   * Sends any command `{type, data}` (`type` with or without `_request`) and resolves with the
   * response's data. `options.timeoutMs` bounds it; `options.signal` (an AbortSignal) cancels
   * it; both reject with `Cancelled`.
   */
  async request(command, options) {
    if (!command || typeof command !== 'object') throw invalidInput('request needs {type, data}')
    return this._send(requestType(command.type), command.data ?? {}, options)
  }

  /** Interrupts the current turn of an image's (or an agent's) agent. */
  interrupt(t) {
    return this.agents.interrupt(t)
  }

  /**
   * Events as an async iterator: `for await (const e of vm.events({sessions: [{sessionId}]}))`.
   * The options are embed's: `sessions`, `allSessions`, `global`, `queue`.
   */
  events(options) {
    return new EventStream(() => this._native.subscribe(optionsJson(options)))
  }

  /** Calls `handler(event)` for every event of `type` (`'*'`: all) that `options` subscribes to; returns the unsubscribe function. */
  on(type, handler, options) {
    if (typeof type !== 'string') throw invalidInput('on(type, handler, options): type must be a string')
    if (typeof handler !== 'function') throw invalidInput('on(type, handler, options): handler must be a function')
    return listen(() => this._native.subscribe(optionsJson(options)), type, handler)
  }

  /** Serves this runtime (embed's serve options: `addr`, `auth`): WebSocket `/ws`, REST, metrics. */
  async serve(options) {
    const served = JSON.parse(await this._native.serve(optionsJson(options)))
    const server = new Server(served, this)
    this._servers.add(server)
    return server
  }

  /** Ends streams and listeners, closes servers, stops agents and releases the store. */
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
  constructor(served, vm) {
    this._served = served
    this._vm = vm
    // The server runs on the tokio runtime, which Node does not see: this handle is what
    // keeps the process alive while the server listens.
    this._keepAlive = setInterval(() => {}, 2 ** 31 - 1)
  }

  /** The bound port. */
  get port() {
    return this._served.port
  }

  /** The bound address. */
  get host() {
    return new URL(this._served.url).hostname.replace(/^\[|\]$/g, '')
  }

  /** The WebSocket URL to `connect()` to. */
  get url() {
    return this._served.wsUrl
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
    if (this._vm._servers.delete(this)) await this._vm._native.stopServing(this.port)
  }
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
    this._events = vm.events({ sessions: [{ sessionId: data.sandboxId }] })
    this._reading = null
    this._finished = false
    this._done = false
    // Send once subscribed (a remote runtime subscribes with a round trip).
    this._response = this._events
      ._stream()
      .then(() => vm._send('sandbox_exec_request', data))
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

/**
 * The Docker sandbox scheduler of a runtime (`vm.scheduler`): groups of commands
 * (SCHEDULER_COMMANDS), plus `exec` (streamed output), `run` and `metrics`. A runtime opened
 * without `scheduler` answers them with `Unavailable`. Records have the shapes of the REST API.
 */
class Scheduler {
  constructor(vm) {
    this._vm = vm
    Object.assign(this, groups(SCHEDULER_COMMANDS, vm))
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
    return (await this._vm._send('sandbox_exec_request', execData(sandboxId, request))).execution
  }

  /** Counters and gauges (pool hits, cold starts, live sandboxes, nodes online, ...). */
  async metrics() {
    return (await this._vm._send('scheduler_metrics_request', {})).metrics
  }
}

/** Opens an in-process runtime with embed's open options (dataDir, llm, scheduler, limits, localTools, definitions, maxTokens). */
async function open(options) {
  return new AgentVm(await native.open(optionsJson(options)))
}

/**
 * Connects to an agentvm server (`ws://host:port/ws`), or to the first that answers of a list
 * of a cluster's servers, failing over between them (options: token, timeoutMs); the runtime
 * has the same API.
 */
async function connect(url, options = {}) {
  if (Array.isArray(url)) return new AgentVm(await native.connect(JSON.stringify({ ...options, urls: url })))
  if (typeof url !== 'string') throw invalidInput('connect(url): url must be a ws:// URL string or a list of them')
  return new AgentVm(await native.connect(JSON.stringify({ ...options, url })))
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
