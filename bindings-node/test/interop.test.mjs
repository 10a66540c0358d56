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
import { pkgDir, until, within } from '../testlib/helpers.mjs'

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
  await until(() => /held \d+/.test(out), 15000, `python to hold the lock: ${out}`)
  const pyToken = Number(out.match(/held (\d+)/)[1])
  await assert.rejects(client.lock('xlang').tryAcquire(), { code: 'LOCK_TIMEOUT' })
  const waiting = client.lock('xlang', { ttl: 5 }).acquire()
  await new Promise((r) => setTimeout(r, 300))
  py.stdin.write('\n')
  const g = await within(waiting, 10000, 'Node acquire after the Python release')
  assert.ok(g.fencingToken > pyToken)
  assert.equal(await within(exited, 15000, 'python exit'), 0, out)
  assert.match(out, /python-timeout/, out)
  await g.release()
})
