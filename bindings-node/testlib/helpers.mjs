// Shared helpers for the node --test suite: one real etcd per test file.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import path from 'node:path'

export const pkgDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

/** Run `node` on a script text (ESM or CJS) in a child; resolves {code, signal, stdout, stderr, ms}. */
export function runNode (source, { type = 'module', env = {}, timeoutMs = 20000, cwd = pkgDir } = {}) {
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
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started })
    })
  })
}

/** Wait until `pred()` is truthy (polling), or fail after `ms`. */
export async function until (pred, ms = 10000, what = 'condition') {
  const end = Date.now() + ms
  while (Date.now() < end) {
    if (await pred()) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`)
}

/** Reject after `ms` unless `p` settles first. */
export function within (p, ms, what = 'promise') {
  let t
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise((_, reject) => { t = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms) }),
  ])
}
