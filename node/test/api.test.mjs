// Every API group of the in-process runtime: containers, images, sessions, definitions,
// agents, raw requests, persistence across close/reopen.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { agentvm, mockVm, tempDir, collectUntil } from './helpers.mjs'

test('containers: create, exists, get, list, delete', async (t) => {
  const vm = await mockVm(t)
  assert.equal(vm.kind, 'local')
  assert.equal(await vm.containers.create('user-alice'), 'user-alice')
  assert.equal(await vm.containers.create('user-alice'), 'user-alice', 'idempotent')
  assert.equal(await vm.containers.exists('user-alice'), true)
  assert.equal(await vm.containers.exists('user-bob'), false)
  assert.deepEqual(await vm.containers.get('user-alice'), { containerId: 'user-alice', exists: true })
  await vm.containers.create('user-bob')
  assert.deepEqual(await vm.containers.list(), ['user-alice', 'user-bob'])
  assert.equal(await vm.containers.delete('user-bob'), true)
  assert.equal(await vm.containers.delete('user-bob'), false)
  assert.deepEqual(await vm.containers.list(), ['user-alice'])
})

test('images: create, get, list, update, run, stop, messages, delete', async (t) => {
  const vm = await mockVm(t)
  const image = await vm.images.create('user-alice', { name: 'Helper', systemPrompt: 'Be brief', model: 'mock' })
  assert.match(image.imageId, /^img_/)
  assert.match(image.sessionId, /^sess_/)
  assert.equal(image.name, 'Helper')
  assert.equal(image.systemPrompt, 'Be brief')
  assert.equal(image.online, false)
  assert.deepEqual(await vm.images.get(image.imageId), image)
  assert.equal(await vm.images.get('img_missing'), null)
  const other = await vm.images.create('user-bob')
  assert.equal(other.name, 'New Conversation')
  assert.deepEqual((await vm.images.list('user-alice')).map((i) => i.imageId), [image.imageId])
  assert.equal((await vm.images.list()).length, 2)
  const renamed = await vm.images.update(image.imageId, { name: 'Renamed', description: 'd' })
  assert.equal(renamed.name, 'Renamed')
  assert.equal(renamed.description, 'd')

  const run = await vm.images.run(image.imageId)
  assert.match(run.agentId, /^agent_/)
  assert.equal(run.reused, false)
  assert.equal((await vm.images.run(image.imageId)).reused, true)
  assert.equal((await vm.images.get(image.imageId)).online, true)
  await vm.images.stop(image.imageId)
  assert.equal((await vm.images.get(image.imageId)).online, false)

  const events = vm.events({ sessions: [{ sessionId: image.sessionId }] })
  await vm.agents.send({ imageId: image.imageId, content: 'Hello' })
  await collectUntil(events, (e) => e.type === 'conversation_end')
  const messages = await vm.images.messages(image.imageId)
  assert.deepEqual(messages.map((m) => m.role), ['user', 'assistant'])
  assert.equal(messages[0].content, 'Hello')
  // Pages: limit and a cursor, passed through as given.
  const page = await vm.images.messagesPage(image.imageId, { limit: 1 })
  assert.deepEqual(page.messages.map((m) => m.role), ['user'])
  assert.equal(page.hasMore, true)
  const next = await vm.images.messages(image.imageId, { after: page.nextCursor })
  assert.deepEqual(next.map((m) => m.role), ['assistant'])
  // history() walks every page.
  const walked = []
  for await (const m of vm.images.history(image.imageId, { pageSize: 1 })) walked.push(m.role)
  assert.deepEqual(walked, ['user', 'assistant'])
  const bySession = []
  for await (const m of vm.sessions.history(image.sessionId)) bySession.push(m.content)
  assert.deepEqual(bySession, messages.map((m) => m.content))

  await vm.images.delete(image.imageId)
  assert.equal(await vm.images.get(image.imageId), null)
  await vm.images.delete(image.imageId) // unknown id is not an error
})

test('sessions: create, list, get, update, resume, messages, delete', async (t) => {
  const vm = await mockVm(t)
  const image = await vm.images.create('user-alice')
  const second = await vm.sessions.create(image.imageId, { title: 'Second' })
  assert.equal(second.imageId, image.imageId)
  assert.equal(second.title, 'Second')
  assert.deepEqual(
    (await vm.sessions.list(image.imageId)).map((s) => s.sessionId).sort(),
    [image.sessionId, second.sessionId].sort(),
  )
  assert.equal((await vm.sessions.get(second.sessionId)).title, 'Second')
  assert.equal(await vm.sessions.get('sess_missing'), null)
  assert.equal((await vm.sessions.update(second.sessionId, { title: 'Renamed' })).title, 'Renamed')
  const resumed = await vm.sessions.resume(second.sessionId)
  assert.match(resumed.agentId, /^agent_/)

  const events = vm.events({ sessions: [{ sessionId: second.sessionId }] })
  await vm.agents.send({ sessionId: second.sessionId, content: 'on the second session' })
  await collectUntil(events, (e) => e.type === 'conversation_end')
  assert.deepEqual((await vm.sessions.messages(second.sessionId)).map((m) => m.role), ['user', 'assistant'])
  assert.deepEqual(await vm.sessions.messages(image.sessionId), [])

  await vm.sessions.delete(second.sessionId)
  assert.equal(await vm.sessions.get(second.sessionId), null)
})

test('definitions: register, get, list, build an image from one', async (t) => {
  const vm = await mockVm(t)
  const def = { name: 'reviewer', description: 'Reviews code', systemPrompt: 'Review carefully', model: 'mock' }
  assert.equal(await vm.definitions.register(def), false)
  assert.equal(await vm.definitions.register(def), true, 'replaced')
  assert.deepEqual(await vm.definitions.get('reviewer'), def)
  assert.equal(await vm.definitions.get('nope'), null)
  assert.deepEqual((await vm.definitions.list()).map((d) => d.name), ['reviewer'])
  const image = await vm.images.build('user-alice', 'reviewer', { name: 'Review 1' })
  assert.equal(image.definitionName, 'reviewer')
  assert.equal(image.systemPrompt, 'Review carefully')
})

test('agents: send, get, list, interrupt, destroy, destroyAll', async (t) => {
  const vm = await mockVm(t)
  const image = await vm.images.create('user-alice')
  const sent = await vm.agents.send({ imageId: image.imageId, content: 'hi' })
  assert.equal(sent.imageId, image.imageId)
  assert.match(sent.agentId, /^agent_/)
  assert.deepEqual(await vm.agents.get(sent.agentId), {
    agentId: sent.agentId,
    containerId: 'user-alice',
    exists: true,
  })
  assert.deepEqual(await vm.agents.list('user-alice'), [
    { agentId: sent.agentId, containerId: 'user-alice', imageId: image.imageId, sessionId: image.sessionId },
  ])
  // Interrupting an idle agent, or an offline image, is a success.
  assert.equal((await vm.interrupt({ agentId: sent.agentId })).agentId, sent.agentId)
  assert.equal(await vm.agents.destroy(sent.agentId), true)
  assert.equal(await vm.agents.destroy(sent.agentId), false)
  assert.deepEqual(await vm.interrupt(image.imageId), { imageId: image.imageId })
  await vm.images.run(image.imageId)
  await vm.agents.destroyAll('user-alice')
  assert.deepEqual(await vm.agents.list('user-alice'), [])
})

test('raw request {type, data}, with or without the _request suffix', async (t) => {
  const vm = await mockVm(t)
  const created = await vm.request({ type: 'image_create_request', data: { containerId: 'c', config: {} } })
  assert.deepEqual(created.__subscriptions, [created.record.sessionId])
  const got = await vm.request({ type: 'image_get', data: { imageId: created.record.imageId } })
  assert.equal(got.record.imageId, created.record.imageId)
  assert.deepEqual(await vm.request({ type: 'container_list' }), { containerIds: ['c'] })
})

test('a data dir persists across close and reopen; close releases the repository', async (t) => {
  const dataDir = tempDir(t)
  const vm = await agentvm.open({ dataDir, llm: 'mock' })
  const image = await vm.images.create('user-alice', { name: 'Kept' })
  const events = vm.events({ sessions: [{ sessionId: image.sessionId }] })
  await vm.agents.send({ imageId: image.imageId, content: 'remember me' })
  await collectUntil(events, (e) => e.type === 'conversation_end')
  await vm.close()
  await vm.close() // twice is a no-op

  const again = await agentvm.open({ dataDir, llm: 'mock' })
  t.after(() => again.close())
  assert.equal((await again.images.get(image.imageId)).name, 'Kept')
  assert.deepEqual((await again.images.messages(image.imageId)).map((m) => m.content), [
    'remember me',
    'Hello from mock!',
  ])
})

test('version is the crate version', () => {
  assert.match(agentvm.version(), /^\d+\.\d+\.\d+/)
})
