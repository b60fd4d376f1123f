// Node overhead over the Rust core: `images.get` round trip and events/s delivered to Node.
//
//   AGENTVM_NODE_RELEASE=1 bash node/build.sh && node node/bench/bench.mjs
//
// The Rust reference numbers come from `cargo bench -p agentvm-benches --bench request`
// (image_get/memory median) and `--bench fanout`; pass your machine's with
// AGENTVM_RUST_IMAGE_GET_US / AGENTVM_RUST_EVENTS_PER_S (defaults: 1.7 µs, as measured on the
// project's reference machine; events: not compared unless given).
// Targets: images.get <= 3x the Rust round trip; >= 100k events/s into Node.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const agentvm = require('../index.js')
const native = require('../agentvm.node')

const RUST_IMAGE_GET_US = Number(process.env.AGENTVM_RUST_IMAGE_GET_US ?? 1.7)
const RUST_EVENTS_PER_S = process.env.AGENTVM_RUST_EVENTS_PER_S ? Number(process.env.AGENTVM_RUST_EVENTS_PER_S) : null
const N = Number(process.env.AGENTVM_BENCH_N ?? 50_000)

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]
}
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(s.length * p))]
}

async function timeEach(n, fn) {
  for (let i = 0; i < Math.min(n, 5000); i++) await fn() // warm up
  const samples = new Float64Array(n)
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint()
    await fn()
    samples[i] = Number(process.hrtime.bigint() - t0) / 1000
  }
  return samples
}

async function imageGet(dataDir) {
  const vm = await agentvm.open({ llm: 'mock', dataDir })
  const image = await vm.images.create('bench')
  const id = image.imageId
  const api = await timeEach(N, () => vm.images.get(id))
  // The native call alone (no JSON.parse of the answer, no façade), for the breakdown.
  const raw = vm._native
  const data = JSON.stringify({ imageId: id })
  const nat = await timeEach(N, () => raw.request('image_get_request', data))
  // Throughput with many calls in flight.
  const t0 = process.hrtime.bigint()
  const batch = 1000
  for (let i = 0; i < N; i += batch) {
    await Promise.all(Array.from({ length: batch }, () => vm.images.get(id)))
  }
  const perSec = N / (Number(process.hrtime.bigint() - t0) / 1e9)
  await vm.close()
  return { api, nat, perSec }
}

async function events(mode) {
  // 100 images, each turn a 100-delta reply (~205 session events: deltas, conversation_responding,
  // start/stop, the stored message), all streaming at once, several rounds.
  const vm = await agentvm.open({ llm: 'mock:long-stream' })
  const images = await Promise.all(Array.from({ length: 100 }, (_, i) => vm.images.create(`t${i % 10}`)))
  const rounds = 5
  const turns = images.length * rounds
  let count = 0
  let ends = 0
  let first = 0n
  let last = 0n
  let resolveDone
  const done = new Promise((r) => (resolveDone = r))
  const seen = (e) => {
    if (count++ === 0) first = process.hrtime.bigint()
    if (e.type === 'conversation_end' && ++ends === turns) {
      last = process.hrtime.bigint()
      resolveDone()
    }
  }
  let stop
  if (mode === 'iterator') {
    const stream = vm.events({ allSessions: true, global: false, queue: 1 << 20 })
    ;(async () => {
      for await (const e of stream) seen(e)
    })()
    stop = () => stream.close()
  } else {
    stop = vm.on('*', seen, { allSessions: true, global: false, queue: 1 << 20 })
  }
  const keepAlive = setInterval(() => {}, 1000)
  const t0 = process.hrtime.bigint()
  for (let r = 0; r < rounds; r++) {
    await Promise.all(images.map((i) => vm.agents.send({ imageId: i.imageId, content: `round ${r}` })))
  }
  await done
  clearInterval(keepAlive)
  stop()
  const seconds = Number(last - first) / 1e9
  const total = Number(last - t0) / 1e9
  await vm.close()
  return { count, perSec: count / seconds, total }
}

const fmt = (x) => x.toFixed(2)
console.log(`agentvm ${agentvm.version()} — node ${process.version}, N=${N}`)
for (const [name, dir] of [['memory', undefined], ['file', (await import('node:fs')).mkdtempSync('/tmp/agentvm-bench-')]]) {
  const r = await imageGet(dir)
  const m = median(r.api)
  console.log(
    `images.get/${name}: median ${fmt(m)} µs (p99 ${fmt(pct(r.api, 0.99))} µs), native call alone ${fmt(median(r.nat))} µs, ` +
      `${Math.round(r.perSec).toLocaleString('en')} calls/s with 1000 in flight; ` +
      `Rust ${RUST_IMAGE_GET_US} µs -> overhead ${fmt(m / RUST_IMAGE_GET_US)}x (target <= 3x)`,
  )
  if (dir) (await import('node:fs')).rmSync(dir, { recursive: true, force: true })
}
for (const mode of ['iterator', 'on']) {
  const r = await events(mode)
  const vsRust = RUST_EVENTS_PER_S ? `, Rust ${RUST_EVENTS_PER_S.toLocaleString('en')}/s -> ${fmt(RUST_EVENTS_PER_S / r.perSec)}x` : ''
  console.log(
    `events/${mode}: ${r.count.toLocaleString('en')} events, ${Math.round(r.perSec).toLocaleString('en')} events/s into Node ` +
      `(all turns done in ${fmt(r.total)} s)${vsRust} (target >= 100,000/s)`,
  )
}
