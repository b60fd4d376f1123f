// Errors are Error objects with code = the core's error kind, and the cause in the message.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { agentvm, mockVm, tempDir, rejectsWithCode } from './helpers.mjs'

const { ErrorCode } = agentvm

test('ErrorCode lists every kind', () => {
  assert.deepEqual(Object.keys(ErrorCode), [
    'NotFound',
    'AlreadyExists',
    'InvalidInput',
    'Conflict',
    'Unavailable',
    'Storage',
    'StorageFull',
    'Protocol',
    'Cancelled',
    'Unauthorized',
    'Internal',
  ])
})

test('NotFound', async (t) => {
  const vm = await mockVm(t)
  await rejectsWithCode(assert, vm.images.update('img_nope', { name: 'x' }), 'NotFound', /img_nope/)
  await rejectsWithCode(assert, vm.sessions.resume('sess_nope'), 'NotFound')
  await rejectsWithCode(assert, vm.images.build('c', 'no-such-definition'), 'NotFound', /Definition/)
  await rejectsWithCode(assert, vm.agents.send({ imageId: 'img_nope', content: 'x' }), 'NotFound', /Image not found/)
})

test('InvalidInput', async (t) => {
  const vm = await mockVm(t)
  await rejectsWithCode(assert, vm.request({ type: 'image_get', data: {} }), 'InvalidInput', /missing field `imageId`/)
  await rejectsWithCode(assert, vm.request({ type: 'nope', data: {} }), 'InvalidInput', /Unknown request type/)
  await rejectsWithCode(assert, vm.agents.send({ content: 'x' }), 'InvalidInput', /Either imageId or agentId/)
  await rejectsWithCode(assert, vm.containers.create(''), 'InvalidInput')
  await rejectsWithCode(assert, agentvm.open({ llm: 'mock:nope' }), 'InvalidInput', /unknown mock scenario/)
  await rejectsWithCode(assert, vm.serve({ auth: 'sometimes' }), 'InvalidInput')
  // Options are embed's, parsed there: an unknown name is refused, naming it.
  await rejectsWithCode(assert, agentvm.open({ dataDirectory: '/tmp' }), 'InvalidInput', /unknown field `dataDirectory`/)
  await rejectsWithCode(assert, vm.events({ sessionId: 'x' }).next(), 'InvalidInput', /unknown field `sessionId`/)
  await rejectsWithCode(assert, vm.serve({ port: 0 }), 'InvalidInput', /unknown field `port`/)
  await rejectsWithCode(assert, agentvm.connect('ws://127.0.0.1:9/ws', { reconnect: false }), 'InvalidInput', /reconnect/)
  assert.throws(() => vm.on(5, () => {}), { code: 'InvalidInput' })
})

test('Conflict: the first session of an image cannot be deleted alone', async (t) => {
  const vm = await mockVm(t)
  const image = await vm.images.create('c')
  await rejectsWithCode(assert, vm.sessions.delete(image.sessionId), 'Conflict', /delete the image instead/)
})

test('AlreadyExists: a template id is taken', async (t) => {
  const vm = await mockVm(t, { scheduler: { background: false } })
  const scheduler = vm.scheduler
  const spec = { name: 'busybox', image: 'agentvm-test/busybox:latest' }
  await scheduler.templates.create('busybox', spec)
  await rejectsWithCode(assert, scheduler.templates.create('busybox', spec), 'AlreadyExists', /busybox/)
})

test('Cancelled: a closed runtime (embed refuses calls on a closed handle)', async () => {
  const vm = await agentvm.open({ llm: 'mock' })
  await vm.close()
  await rejectsWithCode(assert, vm.images.list(), 'Cancelled', /closed/)
  await rejectsWithCode(assert, vm.request({ type: 'container_list' }, { timeoutMs: 1000 }), 'Cancelled', /closed/)
})

test('Cancelled: a request timed out or aborted', async (t) => {
  const vm = await mockVm(t)
  const aborted = new AbortController()
  aborted.abort()
  await rejectsWithCode(assert, vm.request({ type: 'container_list' }, { signal: aborted.signal }), 'Cancelled', /cancelled/)
  // A live signal and a timeout that does not fire: the answer comes through.
  const live = new AbortController()
  assert.deepEqual(await vm.request({ type: 'container_list' }, { signal: live.signal, timeoutMs: 10_000 }), { containerIds: [] })
})

test('Unavailable: a server that is not there', async () => {
  await rejectsWithCode(assert, agentvm.connect('ws://127.0.0.1:9/ws', { timeoutMs: 2000 }), 'Unavailable')
})

test('Unauthorized: a server that requires a token', async (t) => {
  const vm = await mockVm(t)
  const server = await vm.serve({ auth: 'required' })
  t.after(() => server.close())
  // Refused at connect, or at the first request (the server may wait for an auth frame).
  for (const options of [{}, { token: 'avm_wrong' }]) {
    const attempt = agentvm
      .connect(server.url, { ...options, timeoutMs: 3000 })
      .then(async (remote) => {
        try {
          await remote.containers.list()
        } finally {
          await remote.close()
        }
      })
    await rejectsWithCode(assert, attempt, 'Unauthorized')
  }
  const token = await vm.tokens.create({ containerIds: ['tenant-a'] })
  const remote = await agentvm.connect(server.url, { token })
  t.after(() => remote.close())
  await remote.containers.create('tenant-a')
  await rejectsWithCode(assert, remote.containers.create('tenant-b'), 'Unauthorized', /scope/)
})

test('Storage: the cause chain is in the message', async (t) => {
  const dataDir = tempDir(t)
  // The repository file is a directory: redb cannot open it.
  mkdirSync(join(dataDir, 'agentvm.redb'))
  await rejectsWithCode(assert, agentvm.open({ dataDir }), 'Storage', /storage error/)
})

test('Protocol: a server that does not speak the Channel', async (t) => {
  const { createServer } = await import('node:http')
  const http = createServer((req, res) => res.end('not a websocket'))
  await new Promise((resolve) => http.listen(0, '127.0.0.1', resolve))
  t.after(() => http.close())
  const url = `ws://127.0.0.1:${http.address().port}/ws`
  await assert.rejects(agentvm.connect(url, { timeoutMs: 2000 }), (err) => {
    assert.ok(['Protocol', 'Unavailable'].includes(err.code), `${err.code}: ${err.message}`)
    return true
  })
})

test('ask() rejects with the kind of a failed turn, its message and errorCode', async (t) => {
  const vm = await mockVm(t)
  const image = await vm.images.create('c1', { model: 'mock:error' })
  await assert.rejects(vm.agents.ask({ imageId: image.imageId, content: 'hi' }), (err) => {
    assert.ok(err instanceof Error)
    assert.equal(err.code, ErrorCode.Unavailable)
    assert.equal(err.kind, 'unavailable', 'the errorKind of the error_received event')
    assert.match(err.message, /the scenario 'error' always fails/)
    assert.equal(err.errorCode, 'mock_error')
    assert.equal(err.response.imageId, image.imageId)
    return true
  })
  // A normal turn still resolves with the reply.
  const ok = await vm.images.create('c1', { model: 'mock:instant' })
  const { reason, message } = await vm.agents.ask({ imageId: ok.imageId, content: 'hi' })
  assert.equal(reason, 'completed')
  assert.equal(message.content, 'Instant response')
})

test('ask() without an LLM rejects saying how to configure one (not_configured)', async (t) => {
  const saved = process.env.LLM_PROVIDER
  delete process.env.LLM_PROVIDER
  t.after(() => {
    if (saved !== undefined) process.env.LLM_PROVIDER = saved
  })
  const vm = await agentvm.open()
  t.after(() => vm.close())
  const image = await vm.images.create('c1')
  await assert.rejects(vm.agents.ask({ imageId: image.imageId, content: 'hi' }), (err) => {
    assert.equal(err.code, ErrorCode.Unavailable)
    assert.equal(err.kind, 'unavailable')
    assert.equal(err.errorCode, 'not_configured')
    assert.match(err.message, /LLM_PROVIDER/)
    return true
  })
})

test('ask() resolves an interrupted turn (not an error)', async (t) => {
  const vm = await mockVm(t)
  const image = await vm.images.create('c1', { model: 'mock:slow-stream' })
  const events = vm.events({ sessions: [{ sessionId: image.sessionId }] })
  const asked = vm.agents.ask({ imageId: image.imageId, content: 'go' })
  for await (const e of events) {
    if (e.type === 'text_delta') break
  }
  await vm.interrupt({ imageId: image.imageId })
  const { reason } = await asked
  assert.equal(reason, 'interrupted')
})
