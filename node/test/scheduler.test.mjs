// The sandbox scheduler through the package only: open({scheduler}) embeds it (the core
// parses the options) and vm.scheduler drives it with the runtime's commands; there is no
// scheduler code in the native module. The sandbox tests need Docker and
// agentvm-test/busybox:latest (scripts/setup-docker.sh); AGENTVM_SKIP_DOCKER=1 skips them.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { agentvm, mockVm, rejectsWithCode, tempDir } from './helpers.mjs'

const SKIP = process.env.AGENTVM_SKIP_DOCKER === '1'
const ENDPOINT = 'unix:///var/run/docker.sock'
const NODE = { node_id: 'local', api_endpoint: ENDPOINT, total_cpu_cores: 4, total_memory_mb: 8192 }
const FAST = { heartbeatIntervalMs: 200, offlineAfterMs: 1000, sweepIntervalMs: 500, dockerTimeoutMs: 60_000 }
const SPEC = {
  name: 'busybox',
  image: 'agentvm-test/busybox:latest',
  defaultCpuCores: 0.5,
  defaultMemoryMb: 128,
  workdir: '/workspace',
}
const BYTES = Buffer.from([0, 1, 0x62, 0x69, 0x6e, 0xff, 0xfe, 0x0a])
const docker = { skip: SKIP && 'AGENTVM_SKIP_DOCKER=1' }

/** A runtime with the scheduler embedded and the local Docker engine as its node. */
async function dockerVm(t, options = {}) {
  assert.ok(existsSync('/var/run/docker.sock'), 'Docker is needed: run scripts/setup-docker.sh, or set AGENTVM_SKIP_DOCKER=1')
  const vm = await agentvm.open({ llm: 'mock', dataDir: tempDir(t), scheduler: { ...FAST, nodes: [NODE] }, ...options })
  t.after(async () => {
    try {
      for (const sb of await vm.scheduler.sandboxes.list()) {
        if (sb.status === 'creating' || sb.status === 'running') await vm.scheduler.sandboxes.terminate(sb.id)
      }
    } finally {
      await vm.close()
    }
  })
  return vm
}

async function collect(stream) {
  const chunks = []
  let execution = null
  for await (const e of stream) {
    if (e.type === 'output') {
      assert.equal(execution, null, 'chunks come before the execution')
      chunks.push(e)
    } else {
      assert.equal(e.type, 'finished')
      execution = e.execution
    }
  }
  const text = (name) => chunks.filter((c) => c.stream === name).map((c) => c.data).join('')
  return { chunks, execution, stdout: text('stdout'), stderr: text('stderr') }
}

test('a bad scheduler option is the core\'s InvalidInput, naming it', async () => {
  await rejectsWithCode(assert, agentvm.open({ scheduler: { nodez: [] } }), 'InvalidInput', /Invalid scheduler options: unknown field `nodez`/)
  await rejectsWithCode(assert, agentvm.open({ scheduler: { nodez: [] } }), 'InvalidInput', /nodes.*heartbeatIntervalMs|heartbeatIntervalMs.*nodes/)
  await rejectsWithCode(assert, agentvm.open({ scheduler: { sweepIntervalMs: 'soon' } }), 'InvalidInput', /invalid type/)
  await rejectsWithCode(assert, agentvm.open({ scheduler: { orphans: 'keep' } }), 'InvalidInput', /orphans/)
})

test('a runtime without a scheduler says how to embed one', async (t) => {
  const vm = await mockVm(t)
  await rejectsWithCode(assert, vm.scheduler.templates.list(), 'Unavailable', /no sandbox scheduler/)
})

test('templates and bad input, without Docker', async (t) => {
  const vm = await mockVm(t, { scheduler: { background: false } })
  const s = vm.scheduler
  const created = await s.templates.create('busybox', SPEC)
  assert.equal(created.id, 'busybox')
  assert.equal((await s.templates.get('busybox')).image, SPEC.image)
  assert.equal(await s.templates.get('nope'), null)
  assert.deepEqual((await s.templates.list()).map((x) => x.id), ['busybox'])
  const updated = await s.templates.update('busybox', { ...SPEC, defaultMemoryMb: 256 })
  assert.equal(updated.defaultMemoryMb, 256)
  await rejectsWithCode(assert, s.templates.create('bad', { name: 'x', image: 'y', bogus: 1 }), 'InvalidInput', /bogus/)
  await rejectsWithCode(assert, s.sandboxes.create('no-such-template'), 'NotFound')
  await rejectsWithCode(assert, s.nodes.setStatus('nope', 'sideways'), 'InvalidInput')
  assert.deepEqual(await s.nodes.list(), [])
  assert.equal(await s.sandboxes.get('sbx_nope'), null)
  assert.equal((await s.metrics()).nodesOnline, 0)
  assert.throws(() => s.exec('sbx_nope', 42), { code: 'InvalidInput' })
  await s.templates.delete('busybox')
  assert.deepEqual(await s.templates.list(), [])
})

test('a sandbox end to end: template, sandbox, streamed exec, files, lists, delete', docker, async (t) => {
  const vm = await dockerVm(t)
  const s = vm.scheduler
  await s.templates.create('busybox', SPEC)
  const sandbox = await s.sandboxes.create({ templateId: 'busybox', owner: 'user-alice' })
  assert.equal(sandbox.status, 'running')

  const stream = s.exec(sandbox.id, 'echo hi; echo err >&2')
  assert.match(stream.executionId, /^exec_/)
  const out = await collect(stream)
  assert.ok(out.chunks.length >= 1, 'the output streamed as chunks')
  assert.equal(out.stdout, 'hi\n')
  assert.equal(out.stderr, 'err\n')
  assert.equal(out.execution.id, stream.executionId)
  assert.equal(out.execution.exitCode, 0)
  assert.equal(out.execution.status, 'completed')
  assert.deepEqual(stream.execution, out.execution)

  await s.files.write(sandbox.id, 'blob.bin', BYTES)
  assert.deepEqual(await s.files.read(sandbox.id, '/workspace/blob.bin'), BYTES)
  await s.files.write(sandbox.id, 'note.txt', 'text ü')
  assert.equal((await s.files.read(sandbox.id, 'note.txt')).toString(), 'text ü')
  const files = Object.fromEntries((await s.files.list(sandbox.id)).map((f) => [f.name, f]))
  assert.equal(files['blob.bin'].size, BYTES.length)
  assert.equal(files['blob.bin'].kind, 'file')
  assert.deepEqual((await s.sandboxes.list()).map((x) => x.id), [sandbox.id])
  assert.deepEqual((await s.sandboxes.list({ owner: 'user-alice' })).map((x) => x.id), [sandbox.id])
  assert.deepEqual((await s.executions.list(sandbox.id)).map((x) => x.id), [stream.executionId])

  await s.files.delete(sandbox.id, 'blob.bin')
  await rejectsWithCode(assert, s.files.read(sandbox.id, 'blob.bin'), 'NotFound')
  await s.sandboxes.delete(sandbox.id)
  assert.equal(await s.sandboxes.get(sandbox.id), null)
  assert.deepEqual(await s.sandboxes.list(), [])
})

test('nodes, runs, cancel, concurrent execs and events on Docker', docker, async (t) => {
  const vm = await dockerVm(t)
  const s = vm.scheduler
  const sandboxEvents = []
  const off = vm.on('*', (e) => e.source === 'sandbox' && sandboxEvents.push(e.type), { global: true })
  t.after(off)
  assert.deepEqual((await s.nodes.list()).map((n) => n.node_id), ['local'])
  assert.equal((await s.nodes.get('local')).status, 'online')
  assert.equal((await s.nodes.setStatus('local', 'draining')).status, 'draining')
  assert.equal((await s.nodes.setStatus('local', 'online')).status, 'online')
  assert.equal((await s.nodes.heartbeat('local')).node_id, 'local')
  await s.templates.create('busybox', SPEC)
  const sandbox = await s.sandboxes.create('busybox')

  const hi = await s.run(sandbox.id, 'echo hi')
  assert.equal(hi.stdout, 'hi\n')
  assert.equal(hi.exitCode, 0)
  const fail = await s.run(sandbox.id, ['/bin/sh', '-c', 'echo oops >&2; exit 3'])
  assert.equal(fail.stderr, 'oops\n')
  assert.equal(fail.exitCode, 3)
  assert.equal((await s.executions.get(hi.id)).stdout, 'hi\n')

  const a = s.exec(sandbox.id, 'for i in 1 2 3; do echo a$i; sleep 0.05; done')
  const b = s.exec(sandbox.id, { command: ['/bin/sh', '-c', 'for i in 1 2 3; do echo b$i; sleep 0.05; done'], executionId: 'exec_mine_b' })
  assert.equal(b.executionId, 'exec_mine_b')
  const [outA, outB] = await Promise.all([collect(a), collect(b)])
  assert.equal(outA.stdout, 'a1\na2\na3\n')
  assert.equal(outB.stdout, 'b1\nb2\nb3\n')
  assert.ok(outA.chunks.length >= 2, 'streamed, not one blob')
  await rejectsWithCode(assert, s.exec(sandbox.id, { command: ['true'], executionId: 'exec_mine_b' }).wait(), 'AlreadyExists')

  const slow = s.exec(sandbox.id, 'echo started; sleep 30')
  const first = await slow.next()
  assert.equal(first.value.data, 'started\n')
  assert.equal((await s.executions.cancel(slow.executionId)).status, 'cancelled')
  assert.equal((await slow.wait()).status, 'cancelled')

  await rejectsWithCode(assert, s.run('sbx_nope', 'true'), 'NotFound')
  await rejectsWithCode(assert, s.exec('sbx_nope', 'true').wait(), 'NotFound')
  const ended = await s.sandboxes.terminate(sandbox.id)
  assert.equal(ended.status, 'terminated')
  await rejectsWithCode(assert, s.run(sandbox.id, 'echo late'), 'Conflict')
  await s.sandboxes.delete(sandbox.id)
  await s.nodes.remove('local')
  assert.deepEqual(await s.nodes.list(), [])
  assert.ok(sandboxEvents.includes('sandbox_created'), `sandbox events reach vm.on(): ${sandboxEvents}`)
})

test('served and connected: the same package API over the WebSocket', docker, async (t) => {
  const vm = await dockerVm(t)
  const server = await vm.serve()
  t.after(() => server.close())
  const nodes = await (await fetch(`http://127.0.0.1:${server.port}/v1/nodes`)).text()
  assert.match(nodes, /local/)
  const remote = await agentvm.connect(server.url)
  t.after(() => remote.close())
  const s = remote.scheduler
  await s.templates.create('busybox', SPEC)
  const sandbox = await s.sandboxes.create('busybox')
  const out = await collect(s.exec(sandbox.id, 'echo hi; echo err >&2'))
  assert.equal(out.stdout, 'hi\n')
  assert.equal(out.stderr, 'err\n')
  assert.equal(out.execution.exitCode, 0)
  await s.files.write(sandbox.id, 'f.bin', BYTES)
  assert.deepEqual(await s.files.read(sandbox.id, 'f.bin'), BYTES)
  await s.sandboxes.delete(sandbox.id)
})
