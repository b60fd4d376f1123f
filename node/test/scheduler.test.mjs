// The Docker sandbox scheduler from Node: nodes, templates, sandboxes, exec (collected and
// streamed), files, events. Needs Docker and agentvm-test/busybox:latest
// (scripts/setup-docker.sh); AGENTVM_SKIP_DOCKER=1 skips the Docker part on purpose.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mockVm, rejectsWithCode } from './helpers.mjs'

const SKIP = process.env.AGENTVM_SKIP_DOCKER === '1'
const ENDPOINT = 'unix:///var/run/docker.sock'
const SPEC = {
  name: 'busybox',
  image: 'agentvm-test/busybox:latest',
  defaultCpuCores: 0.5,
  defaultMemoryMb: 128,
  workdir: '/workspace',
}

test('templates and bad input, without Docker', async (t) => {
  const vm = await mockVm(t)
  const s = await vm.scheduler({ background: false })
  t.after(() => s.close())
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
  assert.equal(typeof (await s.metrics()).coldStarts, 'number')
  await s.templates.delete('busybox')
  assert.deepEqual(await s.templates.list(), [])
  s.close()
  await rejectsWithCode(assert, s.templates.list(), 'Unavailable', /closed/)
})

test('a sandbox on Docker: create, exec, stream, files, events, terminate', { skip: SKIP && 'AGENTVM_SKIP_DOCKER=1' }, async (t) => {
  assert.ok(existsSync('/var/run/docker.sock'), 'Docker is needed: run scripts/setup-docker.sh, or set AGENTVM_SKIP_DOCKER=1')
  const vm = await mockVm(t)
  const s = await vm.scheduler({ background: false })
  t.after(() => s.close())
  const sandboxEvents = []
  const off = vm.on('*', (e) => e.source === 'sandbox' && sandboxEvents.push(e.type), { global: true })
  t.after(off)
  const node = await s.nodes.register({ node_id: 'local', api_endpoint: ENDPOINT, total_cpu_cores: 4, total_memory_mb: 8192 })
  assert.equal(node.node_id, 'local')
  assert.equal((await s.nodes.get('local')).status, 'online')
  await s.templates.create('busybox', SPEC)
  const sandbox = await s.sandboxes.create({ templateId: 'busybox', owner: 'user-alice' })
  t.after(() => s.sandboxes.delete(sandbox.id).catch(() => {}))
  assert.equal(sandbox.status, 'running')

  const hi = await s.exec(sandbox.id, 'echo hi')
  assert.equal(hi.stdout, 'hi\n')
  assert.equal(hi.exitCode, 0)
  const fail = await s.exec(sandbox.id, ['/bin/sh', '-c', 'echo oops >&2; exit 3'])
  assert.equal(fail.stderr, 'oops\n')
  assert.equal(fail.exitCode, 3)

  const chunks = []
  let finished
  for await (const e of s.execStream(sandbox.id, 'for i in 1 2 3; do echo $i; sleep 0.05; done')) {
    if (e.type === 'output') chunks.push(e.data)
    else finished = e.execution
  }
  assert.equal(chunks.join(''), '1\n2\n3\n')
  assert.equal(finished.exitCode, 0)
  assert.ok((await s.executions.list(sandbox.id)).length >= 3)
  assert.equal((await s.executions.get(hi.id)).stdout, 'hi\n')

  await s.files.write(sandbox.id, '/workspace/note.txt', 'hello file')
  assert.equal((await s.files.read(sandbox.id, '/workspace/note.txt')).toString(), 'hello file')
  const listing = await s.files.list(sandbox.id, '/workspace')
  assert.deepEqual(listing.map((f) => f.name), ['note.txt'])
  await rejectsWithCode(assert, s.files.read(sandbox.id, '/workspace/missing'), 'NotFound')

  const ended = await s.sandboxes.terminate(sandbox.id)
  assert.equal(typeof ended.status, 'string')
  assert.notEqual(ended.status, 'running')
  await rejectsWithCode(assert, s.exec(sandbox.id, 'echo late'), 'Conflict')
  await s.sandboxes.delete(sandbox.id)
  await s.nodes.remove('local')
  assert.ok(sandboxEvents.length > 0, 'sandbox events reach vm.on()')
})
