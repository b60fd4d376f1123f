// The process ends when its work ends: child node processes with a timeout.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const index = fileURLToPath(new URL('../index.js', import.meta.url))

/** Runs `body` in a child node; resolves with {code, signal, ms, stdout, stderr}. */
function run(body, timeoutMs = 10_000) {
  const script = `const agentvm = require(${JSON.stringify(index)});\n(async () => {\n${body}\n})().catch((e) => { console.error(e); process.exit(3) })`
  return new Promise((resolve) => {
    const started = Date.now()
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, ms: Date.now() - started, stdout, stderr })
    })
  })
}

test('exits after close()', async () => {
  const r = await run(`
    const vm = await agentvm.open({ llm: 'mock' })
    const image = await vm.images.create('c')
    await vm.agents.ask({ imageId: image.imageId, content: 'hi' })
    await vm.close()
    console.log('done')`)
  assert.equal(r.code, 0, r.stderr)
  assert.equal(r.stdout.trim(), 'done')
  assert.ok(r.ms < 5000, `took ${r.ms} ms`)
})

test('exits when its work ends, even without close() and with listeners registered', async () => {
  const r = await run(`
    const vm = await agentvm.open({ llm: 'mock' })
    vm.on('*', () => {}, { allSessions: true, global: true })
    const image = await vm.images.create('c')
    const { message } = await vm.agents.ask({ imageId: image.imageId, content: 'hi' })
    console.log(message.content)`)
  assert.equal(r.code, 0, r.stderr)
  assert.equal(r.stdout.trim(), 'Hello from mock!')
  assert.ok(r.ms < 5000, `took ${r.ms} ms`)
})

test('a listening server keeps the process alive until it is closed', async () => {
  const r = await run(`
    const vm = await agentvm.open({ llm: 'mock' })
    const server = await vm.serve()
    setTimeout(async () => { await server.close(); console.log('closed') }, 500)`)
  assert.equal(r.code, 0, r.stderr)
  assert.equal(r.stdout.trim(), 'closed')
  assert.ok(r.ms >= 500, `ended after ${r.ms} ms, before the server closed`)

  const hang = await run(
    `const vm = await agentvm.open({ llm: 'mock' }); await vm.serve(); console.log('listening')`,
    1500,
  )
  assert.equal(hang.signal, 'SIGKILL', 'still serving when killed')
  assert.equal(hang.stdout.trim(), 'listening')

  const unref = await run(`
    const vm = await agentvm.open({ llm: 'mock' })
    const server = (await vm.serve()).unref()
    console.log(server.port > 0)`)
  assert.equal(unref.code, 0, unref.stderr)
})

test('vm.close() ends a pending event iterator, closes servers, and the process exits', async () => {
  const r = await run(`
    const vm = await agentvm.open({ llm: 'mock' })
    await vm.serve()
    setTimeout(() => vm.close(), 200)
    let n = 0
    for await (const e of vm.events()) n++
    console.log('ended', n)`)
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /^ended \d+/)
  assert.ok(r.ms < 5000, `took ${r.ms} ms`)
})

test('a remote runtime exits after close()', async () => {
  const r = await run(`
    const vm = await agentvm.open({ llm: 'mock' })
    const server = await vm.serve()
    const remote = await agentvm.connect(server.url)
    await remote.containers.create('c')
    console.log((await remote.containers.list()).join(','))
    await remote.close()
    await vm.close()`)
  assert.equal(r.code, 0, r.stderr)
  assert.equal(r.stdout.trim(), 'c')
  assert.ok(r.ms < 5000, `took ${r.ms} ms`)
})
