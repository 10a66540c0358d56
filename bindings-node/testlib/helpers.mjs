// Shared helpers for the node --test suite: one real etcd per test file.
//
// Timing rules the tests follow (they must pass on a loaded 2-core machine):
//  - wait for the event asserted on (`until`, `within`), never for a fixed time;
//  - "eventually" deadlines are generous (a passing test never waits for them);
//  - failure messages stay small: counts, keys, revisions, the tail of child output.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import path from 'node:path'

export const pkgDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

/** The default deadline of an "eventually" wait: things that take milliseconds when idle. */
export const EVENTUALLY_MS = 15000

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** The last `n` characters of `s` (child output in a failure message). */
export function tail (s, n = 2000) {
  s = String(s ?? '')
  return s.length <= n ? s : `...${s.slice(-n)}`
}

/**
 * Spawn a child, collect its stdout+stderr, SIGKILL it after `timeoutMs` (a hang catcher).
 * Returns { child, out(), exited } where `exited` resolves to {code, signal, exitedAt}.
 */
export function spawnChild (cmd, args, { timeoutMs = 60000, ...options } = {}) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options })
  let out = ''
  child.stdout?.on('data', (d) => { out += d })
  child.stderr?.on('data', (d) => { out += d })
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => {
    clearTimeout(timer)
    resolve({ code, signal, exitedAt: Date.now() })
  }))
  return { child, out: () => out, exited }
}

/**
 * Run `node` on a script text (ESM or CJS) in a child; resolves
 * {code, signal, stdout, stderr, ms, exitedAt}. `timeoutMs` only catches a hang (SIGKILL).
 */
export function runNode (source, { type = 'module', env = {}, timeoutMs = 60000, cwd = pkgDir } = {}) {
  return new Promise((resolve) => {
    const started = Date.now()
    const args = type === 'module' ? ['--input-type=module', '-e', source] : ['-e', source]
    const child = spawn(process.execPath, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => { stdout += d })
    child.stderr.on('data', (d) => { stderr += d })
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      const exitedAt = Date.now()
      resolve({ code, signal, stdout, stderr, ms: exitedAt - started, exitedAt })
    })
  })
}

/**
 * Wait until `pred()` is truthy (polling every 50 ms), or fail after `ms`. `what` names the
 * condition in the error; it may be a function, called on timeout, that describes the
 * state seen (keep it short). A `pred` that never settles also fails at the deadline.
 */
export async function until (pred, ms = EVENTUALLY_MS, what = 'condition') {
  const end = Date.now() + ms
  for (;;) {
    const left = Math.max(end - Date.now(), 1)
    if (await within(Promise.resolve().then(pred), left, `a check of ${typeof what === 'function' ? 'the condition' : what}`)) return
    if (Date.now() >= end) break
    await sleep(Math.min(50, Math.max(end - Date.now(), 1)))
  }
  const desc = typeof what === 'function' ? what() : what
  throw new Error(`timed out after ${ms} ms waiting for ${desc}`)
}

/** Reject after `ms` unless `p` settles first. `what` as for `until`. */
export function within (p, ms = EVENTUALLY_MS, what = 'promise') {
  let t
  return Promise.race([
    Promise.resolve(p).finally(() => clearTimeout(t)),
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(`${typeof what === 'function' ? what() : what} did not settle within ${ms} ms`)), ms)
    }),
  ])
}

/**
 * Start `node` on a script text (ESM) in a child and return at once:
 * { child, stdout(), stderr(), exited } where `exited` resolves {code, signal, exitedAt}.
 * SIGKILL after `timeoutMs` catches a hang.
 */
export function startNode (source, { env = {}, timeoutMs = 60000, cwd = pkgDir } = {}) {
  const child = spawn(process.execPath, ['--input-type=module', '-e', source], {
    cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d) => { stdout += d })
  child.stderr.on('data', (d) => { stderr += d })
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => {
    clearTimeout(timer)
    resolve({ code, signal, exitedAt: Date.now() })
  }))
  return { child, stdout: () => stdout, stderr: () => stderr, exited }
}
