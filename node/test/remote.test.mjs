// The remote runtime against the in-process server: the same API over the WebSocket Channel.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { agentvm, mockVm, collectUntil } from './helpers.mjs'

test('serve + connect: a round trip of every group and a streamed reply', async (t) => {
  const vm = await mockVm(t)
  const server = await vm.serve({ addr: '127.0.0.1:0' })
  t.after(() => server.close())
  assert.ok(server.port > 0)
  assert.equal(server.url, `ws://127.0.0.1:${server.port}/ws`)
  const health = await (await fetch(`http://127.0.0.1:${server.port}/health`)).json()
  assert.equal(health.status, 'ok')

  const remote = await agentvm.connect(server.url)
  t.after(() => remote.close())
  assert.equal(remote.kind, 'remote')
  const image = await remote.images.create('user-alice', { name: 'Remote', model: 'mock:multi-delta' })
  assert.equal((await vm.images.get(image.imageId)).name, 'Remote', 'the local runtime sees it')
  assert.deepEqual(await remote.containers.list(), ['user-alice'])
  await remote.definitions.register({ name: 'd1', systemPrompt: 'x' })
  assert.equal((await vm.definitions.get('d1')).systemPrompt, 'x')
  const second = await remote.sessions.create(image.imageId, { title: 't' })
  assert.equal((await remote.sessions.list(image.imageId)).length, 2)
  assert.equal((await remote.sessions.get(second.sessionId)).title, 't')

  const events = remote.events({ sessions: [{ sessionId: image.sessionId }] })
  await remote.agents.send({ imageId: image.imageId, content: 'over the wire' })
  const got = await collectUntil(events, (e) => e.type === 'conversation_end')
  assert.equal(got.filter((e) => e.type === 'text_delta').length, 5)
  assert.equal(typeof got[0].cursor, 'number')
  const asked = await remote.agents.ask({ imageId: image.imageId, content: 'again' })
  assert.equal(asked.reason, 'completed')
  assert.deepEqual((await remote.images.messages(image.imageId)).map((m) => m.role), [
    'user',
    'assistant',
    'user',
    'assistant',
  ])
  assert.equal((await remote.request({ type: 'image_get', data: { imageId: image.imageId } })).record.name, 'Remote')
  await assert.rejects(remote.serve(), { code: 'InvalidInput' })
  // Tokens are a command like the rest: a loopback server without auth lets its client make one.
  const token = await remote.tokens.create({ containerIds: ['user-alice'] })
  assert.equal(typeof token, 'string')
  assert.ok(token.length > 10, token)
})

test('connect with a list of URLs fails over when its server stops', async (t) => {
  const vm = await mockVm(t)
  const a = await vm.serve({ addr: '127.0.0.1:0' })
  const b = await vm.serve({ addr: '127.0.0.1:0' })
  t.after(() => b.close())
  const remote = await agentvm.connect([a.url, b.url], { timeoutMs: 10000 })
  t.after(() => remote.close())
  await remote.containers.create('c1')
  await a.close() // the server it is on stops: the client moves to the other
  assert.deepEqual(await vm.containers.list(), ['c1'], 'stopping a server keeps the runtime open')
  // A request the dropped connection carried fails with Unavailable ("may or may not have
  // run"); once the client is on the second server, requests are answered again.
  let listed
  for (let tries = 0; listed === undefined; tries++) {
    try {
      listed = await remote.containers.list()
    } catch (e) {
      assert.equal(e.kind, 'unavailable', String(e))
      assert.ok(tries < 100, 'the client reached the second server within 5 s')
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
  assert.deepEqual(listed, ['c1'])
  await assert.rejects(agentvm.connect([]), { code: 'InvalidInput', message: /urls is empty/ })
  await assert.rejects(agentvm.connect(['http://127.0.0.1:1/ws']), { code: 'InvalidInput' })
})
