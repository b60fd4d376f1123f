// Node overhead over the Rust core: `images.get` round trip and events/s delivered to Node.
//
//   AGENTVM_NODE_RELEASE=1 bash node/build.sh && node node/bench/bench.mjs
//
// The Rust reference is `cargo bench -p agentvm-benches --bench ffi` (`ffi/rust_image_get/memory`
// and `/file` medians); pass your machine's with AGENTVM_RUST_IMAGE_GET_US /
// AGENTVM_RUST_IMAGE_GET_FILE_US (defaults: 0.76 and 1.8 µs, bindings/README.md).
// Targets (issue 11): images.get <= 2x the Rust call; >= 500k events/s into Node with batches.
import { createRequire } from 'node:module'
import { mkdtempSync, rmSync } from 'node:fs'

const require = createRequire(import.meta.url)
const agentvm = require('../index.js')

const RUST_US = {
  memory: Number(process.env.AGENTVM_RUST_IMAGE_GET_US ?? 0.76),
  file: Number(process.env.AGENTVM_RUST_IMAGE_GET_FILE_US ?? 1.8),
}
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
  const vm = await agentvm.open(dataDir ? { llm: 'mock', dataDir } : { llm: 'mock' })
  const image = await vm.images.create('bench')
  const id = image.imageId
  const api = await timeEach(N, () => vm.images.get(id))
  // The native call alone (JSON text in and out, no JSON.parse, no façade), for the breakdown.
  const raw = vm._native
  const command = JSON.stringify({ type: 'image_get_request', data: { imageId: id } })
  const nat = await timeEach(N, () => raw.request(command))
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

/** 100 images, each turn a 100-delta reply (~205 session events), 5 rounds: 102,500 events. */
async function turns(vm, images, rounds) {
  for (let r = 0; r < rounds; r++) {
    await Promise.all(images.map((i) => vm.agents.ask({ imageId: i.imageId, content: `round ${r}` })))
  }
}

async function events(mode) {
  const vm = await agentvm.open({ llm: 'mock:long-stream' })
  const images = await Promise.all(Array.from({ length: 100 }, (_, i) => vm.images.create(`t${i % 10}`)))
  const rounds = 5
  const expected = images.length * rounds
  const options = { allSessions: true, queue: 1 << 20 }
  let count = 0
  let ends = 0
  let first = 0n
  let last = 0n
  const seen = (e) => {
    if (count++ === 0) first = process.hrtime.bigint()
    if (e.type === 'conversation_end' && ++ends === expected) last = process.hrtime.bigint()
  }
  const t0 = process.hrtime.bigint()
  if (mode === 'on') {
    const off = vm.on('*', seen, options)
    await turns(vm, images, rounds)
    while (ends < expected) await new Promise((r) => setTimeout(r, 1))
    off()
  } else {
    const stream = vm.events(options)
    // backlog: every turn ends before the first read, so this times delivery alone.
    const producing = turns(vm, images, rounds)
    if (mode === 'backlog') await producing
    while (ends < expected) {
      if (mode === 'iterator') {
        const { value } = await stream.next()
        seen(value)
      } else {
        for (const e of await stream.nextBatch()) seen(e)
      }
    }
    await producing
    await stream.close()
  }
  const seconds = Number(last - first) / 1e9
  const total = Number(last - t0) / 1e9
  await vm.close()
  return { count, perSec: count / seconds, total }
}

const fmt = (x) => x.toFixed(2)
console.log(`agentvm ${agentvm.version()} — node ${process.version}, N=${N}`)
for (const name of ['memory', 'file']) {
  const dir = name === 'file' ? mkdtempSync('/tmp/agentvm-bench-') : undefined
  const r = await imageGet(dir)
  const m = median(r.api)
  console.log(
    `images.get/${name}: median ${fmt(m)} µs (p99 ${fmt(pct(r.api, 0.99))} µs), native call alone ${fmt(median(r.nat))} µs, ` +
      `${Math.round(r.perSec).toLocaleString('en')} calls/s with 1000 in flight; ` +
      `Rust ${RUST_US[name]} µs -> ${fmt(m / RUST_US[name])}x (target <= 2x)`,
  )
  if (dir) rmSync(dir, { recursive: true, force: true })
}
const MODES = (process.env.AGENTVM_BENCH_EVENTS ?? "iterator,batches,on,backlog").split(",").filter(Boolean)
for (const mode of MODES) {
  const r = await events(mode)
  console.log(
    `events/${mode}: ${r.count.toLocaleString('en')} events, ${Math.round(r.perSec).toLocaleString('en')} events/s into Node ` +
      `(all turns done in ${fmt(r.total)} s) (target >= 500,000/s with batches)`,
  )
}
