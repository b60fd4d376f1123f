// Shared helpers of the node --test suites.
import { createRequire } from 'node:module'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const require = createRequire(import.meta.url)
/** The package under test (index.js, loading agentvm.node). */
export const agentvm = require('../index.js')

/** A fresh temporary directory, removed after the test. */
export function tempDir(t) {
  const dir = mkdtempSync(join(tmpdir(), 'agentvm-node-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** An in-memory runtime with the mock driver, closed after the test. */
export async function mockVm(t, options = {}) {
  const vm = await agentvm.open({ llm: 'mock', ...options })
  t.after(() => vm.close())
  return vm
}

/** Collects events from an iterator until `stop(event)` is true; fails after `ms`. */
export async function collectUntil(stream, stop, ms = 10_000) {
  const events = []
  const timer = setTimeout(() => stream.close(), ms)
  try {
    for await (const e of stream) {
      events.push(e)
      if (stop(e)) break
    }
  } finally {
    clearTimeout(timer)
  }
  if (!events.length || !stop(events[events.length - 1])) {
    throw new Error(`stream ended without the awaited event; got ${events.map((e) => e.type).join(',')}`)
  }
  return events
}

/** embed's snake_case kind of a PascalCase code: `NotFound` → `not_found`. */
export const kindOf = (code) => code.replace(/([a-z])([A-Z])/g, '$1_$2').toLowerCase()

/** Asserts that `promise` rejects with an error whose `code` is `code` (and `kind` its kind). */
export async function rejectsWithCode(assert, promise, code, messagePart) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof Error, `an Error, got ${err}`)
    assert.equal(err.code, code, `code of: ${err.message}`)
    assert.equal(err.kind, kindOf(code), `kind of: ${err.message}`)
    if (messagePart) assert.match(err.message, messagePart)
    return true
  })
}
