// Events: a streamed reply end to end (mock driver), on()/unsubscribe, replay after a
// cursor, interrupts, and the global topic.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mockVm, collectUntil } from './helpers.mjs'

test('a streamed reply arrives in protocol order with cursors (async iterator)', async (t) => {
  const vm = await mockVm(t)
  const image = await vm.images.create('user-alice', { model: 'mock:long-stream' })
  const events = vm.events({ sessions: [{ sessionId: image.sessionId }] })
  await vm.agents.send({ imageId: image.imageId, content: 'stream please' })
  const got = await collectUntil(events, (e) => e.type === 'conversation_end')
  const types = got.map((e) => e.type)
  assert.equal(types[0], 'message_start')
  assert.equal(types[1], 'conversation_start')
  assert.equal(types.filter((x) => x === 'text_delta').length, 100)
  assert.deepEqual(types.slice(-3), ['message_stop', 'assistant_message', 'conversation_end'])
  const text = got.filter((e) => e.type === 'text_delta').map((e) => e.data.text).join('')
  const stored = got.find((e) => e.type === 'assistant_message').data
  assert.equal(stored.role, 'assistant')
  assert.deepEqual(stored.content, text)
  for (const e of got) {
    assert.equal(e.context.sessionId, image.sessionId)
    assert.equal(e.context.imageId, image.imageId)
    assert.equal(typeof e.cursor, 'number')
  }
  const cursors = got.map((e) => e.cursor)
  assert.deepEqual([...cursors].sort((a, b) => a - b), cursors, 'cursors increase')
  assert.equal(got.at(-1).data.reason, 'completed')
})

test('on(type, handler) receives events until unsubscribed', async (t) => {
  const vm = await mockVm(t)
  const image = await vm.images.create('user-alice', { model: 'mock:multi-delta' })
  const deltas = []
  const all = []
  const offDeltas = vm.on('text_delta', (e) => deltas.push(e.data.text), { allSessions: true })
  const offAll = vm.on('*', (e) => all.push(e.type), { allSessions: true, global: true })
  // Listeners are weak: ask() (send + wait for the turn) is what keeps Node running.
  const { reason, message } = await vm.agents.ask({ imageId: image.imageId, content: 'hi' })
  assert.equal(reason, 'completed')
  // Listeners are fed by their own subscription: ask() may resolve before the last batch
  // reaches them. Wait (bounded) for them to catch up, then compare.
  for (let i = 0; i < 200 && deltas.length < 5; i++) {
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  assert.equal(deltas.length, 5)
  assert.equal(message.content, deltas.join(''))
  assert.ok(all.includes('agent_registered'), 'global events too')
  offDeltas()
  offAll()
  offAll() // twice is fine
  await vm.agents.ask({ imageId: image.imageId, content: 'again' })
  await new Promise((resolve) => setTimeout(resolve, 20))
  assert.equal(deltas.length, 5, 'nothing after unsubscribe')
})

test('on() with a session filter', async (t) => {
  const vm = await mockVm(t)
  const a = await vm.images.create('user-alice')
  const b = await vm.images.create('user-alice')
  const seen = new Set()
  const off = vm.on('*', (e) => seen.add(e.context?.sessionId), { sessions: [{ sessionId: b.sessionId }] })
  t.after(off)
  await vm.agents.ask({ imageId: a.imageId, content: 'to a' })
  await vm.agents.ask({ imageId: b.imageId, content: 'to b' })
  await new Promise((resolve) => setTimeout(resolve, 20))
  assert.deepEqual([...seen], [b.sessionId])
})

test('events after a cursor are replayed, without duplicates', async (t) => {
  const vm = await mockVm(t)
  const image = await vm.images.create('user-alice', { model: 'mock:multi-delta' })
  const live = vm.events({ sessions: [{ sessionId: image.sessionId }] })
  await vm.agents.send({ imageId: image.imageId, content: 'one' })
  const first = await collectUntil(live, (e) => e.type === 'conversation_end')
  const middle = first[3]
  const replay = vm.events({ sessions: [{ sessionId: image.sessionId, afterCursor: middle.cursor }] })
  const replayed = await collectUntil(replay, (e) => e.type === 'conversation_end')
  assert.deepEqual(
    replayed.map((e) => e.cursor),
    first.slice(4).map((e) => e.cursor),
  )
})

test('interrupt stops a streaming turn: conversation_end says interrupted', async (t) => {
  const vm = await mockVm(t)
  const image = await vm.images.create('user-alice', { model: 'mock:slow-stream' })
  const events = vm.events({ sessions: [{ sessionId: image.sessionId }] })
  await vm.agents.send({ imageId: image.imageId, content: 'slowly' })
  const got = []
  for await (const e of events) {
    got.push(e)
    if (e.type === 'text_delta' && got.filter((x) => x.type === 'text_delta').length === 2) {
      await vm.interrupt({ imageId: image.imageId })
    }
    if (e.type === 'conversation_end') break
  }
  assert.equal(got.at(-1).data.reason, 'interrupted')
  assert.ok(got.some((e) => e.type === 'interrupted'))
  assert.ok(got.filter((e) => e.type === 'text_delta').length < 50)
})

test('closing the runtime ends its streams', async (t) => {
  const vm = await mockVm(t)
  const stream = vm.events()
  const pending = stream.next()
  await vm.close()
  assert.deepEqual(await pending, { value: undefined, done: true })
})

test('a subscriber that falls behind resumes without losing or repeating events (embed overflow policy)', async (t) => {
  const vm = await mockVm(t)
  const image = await vm.images.create('user-alice', { model: 'mock:long-stream' })
  // A queue of 1 and nobody reading while two turns stream: the bus overflows this subscriber.
  const events = vm.events({ sessions: [{ sessionId: image.sessionId }], queue: 1 })
  await vm.agents.ask({ imageId: image.imageId, content: 'one' })
  await vm.agents.ask({ imageId: image.imageId, content: 'two' })
  const got = []
  let ends = 0
  for await (const e of events) {
    got.push(e)
    if (e.type === 'conversation_end' && ++ends === 2) break
  }
  const types = new Set(got.map((e) => e.type))
  assert.ok(!types.has('subscription_overflowed'), 'no invented end-of-stream event')
  assert.ok(!types.has('subscription_gap'), 'the replay log holds every session event')
  assert.equal(got.filter((e) => e.type === 'text_delta').length, 200)
  const cursors = got.map((e) => e.cursor)
  assert.ok(cursors.every((c, i) => i === 0 || c > cursors[i - 1]), 'cursors strictly increase: no duplicates')
})

test('nextBatch() returns several events in one call', async (t) => {
  const vm = await mockVm(t)
  const image = await vm.images.create('user-alice', { model: 'mock:long-stream' })
  const events = vm.events({ sessions: [{ sessionId: image.sessionId }] })
  t.after(() => events.close())
  await vm.agents.ask({ imageId: image.imageId, content: 'stream please' })
  const batch = await events.nextBatch({ timeoutMs: 5000 })
  assert.ok(Array.isArray(batch) && batch.length > 100, `one batch holds the backlog, got ${batch?.length}`)
  assert.equal(batch[0].type, 'message_start')
  // The stream's pump may still be moving the turn's last events when ask() returns.
  const all = [...batch]
  while (!all.some((e) => e.type === 'conversation_end')) {
    const more = await events.nextBatch({ timeoutMs: 5000 })
    assert.ok(Array.isArray(more), 'the rest of the turn')
    all.push(...more)
  }
  assert.equal(all.filter((e) => e.type === 'text_delta').length, 100)
  assert.equal(await events.nextBatch({ timeoutMs: 50 }) ?? 'timed out', 'timed out')
})
