// A Node lock excludes a Python holder (the Python binding of the same core), and the
// reverse. Needs a Python with `etcd_recipes` installed: $VENV/bin/python, or the
// repository's .venv (scripts/test builds the Python binding before the Node one).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import path from 'node:path'
import { Client } from 'etcd-recipes'
import { EtcdCluster } from 'etcd-recipes/testing'
import { pkgDir, until, within, tail } from '../testlib/helpers.mjs'

const candidates = [process.env.VENV && path.join(process.env.VENV, 'bin', 'python'), path.resolve(pkgDir, '..', '.venv', 'bin', 'python')].filter(Boolean)
const python = candidates.find((p) => existsSync(p) && spawnSync(p, ['-c', 'import etcd_recipes; etcd_recipes.Client.lock']).status === 0)

const holder = `
import asyncio, sys, etcd_recipes
async def main():
    c = await etcd_recipes.Client.connect(sys.argv[1].split(","))
    g = await c.lock("xlang", ttl=5).acquire()
    print("held", g.fencing_token, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await g.release()
    print("released", flush=True)
    try:
        await c.lock("xlang").try_acquire()
        print("python acquired while Node holds", flush=True)
    except etcd_recipes.LockTimeoutError:
        print("python-timeout", flush=True)
asyncio.run(main())
`

let etcd
let client
before(async () => {
  if (!python) return
  etcd = await EtcdCluster.start()
  client = await Client.connect({ endpoints: etcd.endpoints })
})
after(async () => {
  await client?.close()
  await etcd?.close()
})

test('a Node lock and a Python lock holder exclude each other', { skip: python ? false : 'no Python with etcd_recipes (set VENV)' }, async () => {
  const py = spawn(python, ['-c', holder, etcd.endpoints.join(',')], { stdio: ['pipe', 'pipe', 'pipe'] })
  let out = ''
  py.stdout.on('data', (d) => { out += d })
  py.stderr.on('data', (d) => { out += d })
  const exited = new Promise((resolve) => py.on('exit', resolve))
  let contenders
  try {
    await until(() => /held \d+/.test(out), 30000, () => `python to hold the lock: ${tail(out, 1000)}`)
    const pyToken = Number(out.match(/held (\d+)/)[1])
    // A failed tryAcquire deletes its key before it rejects, so this view, loaded after,
    // holds Python's key and, once it is queued, the key of Node's waiting acquire.
    await assert.rejects(client.lock('xlang').tryAcquire(), { code: 'LOCK_TIMEOUT' })
    contenders = await client.config('xlang/', { prefix: true, reconcileIntervalMs: 0 })
    assert.equal(contenders.keys().length, 1, `contenders: ${contenders.keys().join(', ')}`)
    const waiting = client.lock('xlang', { ttl: 5 }).acquire()
    // Python releases only once Node is queued: then Node is next, and Python's own
    // tryAcquire afterwards must fail (not win a race against Node's first request).
    await until(() => contenders.keys().length === 2, 15000, () => `Node to queue behind Python (contenders: ${contenders.keys().join(', ')})`)
    py.stdin.write('\n')
    const g = await within(waiting, 20000, 'Node acquire after the Python release')
    assert.ok(g.fencingToken > pyToken, `Node token ${g.fencingToken}, Python token ${pyToken}`)
    assert.equal(await within(exited, 30000, () => `python exit: ${tail(out, 1000)}`), 0, tail(out, 1000))
    assert.match(out, /python-timeout/, tail(out, 1000))
    await g.release()
  } finally {
    contenders?.close()
    py.kill('SIGKILL') // no-op once it exited
  }
})
