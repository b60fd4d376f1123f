// 1,000 concurrent sends: every one answered, every reply stored.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mockVm } from './helpers.mjs'

test('1,000 concurrent sends over 100 images are all answered and stored', async (t) => {
  const vm = await mockVm(t, { llm: 'mock:instant' })
  const images = await Promise.all(Array.from({ length: 100 }, (_, i) => vm.images.create(`tenant-${i % 10}`)))
  let ends = 0
  const allEnded = new Promise((resolve) => {
    const off = vm.on(
      'conversation_end',
      () => {
        if (++ends === 1000) {
          off()
          resolve()
        }
      },
      { allSessions: true },
    )
  })
  const keepAlive = setInterval(() => {}, 1000) // on() is weak; the test waits on it
  const started = Date.now()
  const sends = await Promise.all(
    Array.from({ length: 1000 }, (_, i) => vm.agents.send({ imageId: images[i % 100].imageId, content: `m${i}` })),
  )
  assert.equal(new Set(sends.map((s) => s.messageId)).size, 1000)
  await allEnded
  clearInterval(keepAlive)
  const elapsed = Date.now() - started
  const counts = await Promise.all(images.map((i) => vm.images.messages(i.imageId)))
  assert.deepEqual(
    counts.map((m) => m.length),
    images.map(() => 20),
    'ten user messages and ten replies per image',
  )
  t.diagnostic(`1000 sends answered in ${elapsed} ms`)
})
