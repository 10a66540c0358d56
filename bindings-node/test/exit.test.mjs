// The process exits cleanly, and leaves nothing behind in etcd: after client.close(), with
// everything left open, on process.exit(), an uncaught exception, an unhandled rejection,
// SIGTERM and SIGINT. Each case runs in a child process; afterwards a separate client sees
// none of the child's keys and leases at once (TTL 60 s, so expiry cannot explain it).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Client } from 'etcd-recipes'
import { EtcdCluster } from 'etcd-recipes/testing'
import { runNode, startNode, tail, within, until } from '../testlib/helpers.mjs'

let etcd
let client
before(async () => {
  etcd = await EtcdCluster.start()
  client = await Client.connect({ endpoints: etcd.endpoints })
})
after(async () => {
  await client?.close()
  await etcd?.close()
})

const eps = () => JSON.stringify(etcd.endpoints)

// How long after the script's last statement the process may take to exit by itself.
// Measured from a timestamp the child prints, so a slow start on a loaded machine does not
// count; a leftover ref'd handle (a timer, a socket) would keep it alive far longer, or for
// ever (the child is killed after its timeout, and the exit status then fails the test).
const EXIT_MS = 8000
/** A child's result for a failure message: the exit and the tail of both streams. */
const both = (r) => `code ${r.code} signal ${r.signal}\nstdout: ${tail(r.stdout, 1000)}\nstderr: ${tail(r.stderr, 1000)}`
function exitDelay (r, marker) {
  const m = r.stdout.match(new RegExp(`${marker} (\\d+)`))
  assert.ok(m, `no "${marker}" line in: ${tail(r.stdout, 1000)}`)
  return r.exitedAt - Number(m[1])
}

/** Lines of a child's stderr that are not the Node report of the expected error `marker`. */
function unexpectedStderr (stderr, marker) {
  const report = [/^\s+at /, /^Node\.js v/, /^file:\/\//, /^\[eval/, /^\s*\^+\s*$/, /^node:internal/, /^\s*triggerUncaughtException/, /^\s*}?\s*$/]
  return stderr.split('\n').filter((l) => l.trim() !== '' && !(marker && (l.includes(marker) || report.some((re) => re.test(l)))))
}

// One child: a held lock, a queued waiter for it, a leadership, a registration, a service
// view with an iterator over it and a config view (TTL 60 everywhere), then ENDING.
function child (ns, ending) {
  const waits = ending !== 'forgot'
  return `
    import { Client } from 'etcd-recipes'
    const client = await Client.connect({ endpoints: ${eps()}, namespace: ${JSON.stringify(ns)} })
    const guard = await client.lock('lock', { ttl: 60 }).acquire()
    guard.onLost((r) => console.log('guard lost:', r))
    const queue = await client.config('lock/', { prefix: true, reconcileIntervalMs: 0 })
    const waiting = ${waits} ? client.lock('lock', { ttl: 60 }).acquire().then(() => 'acquired', (e) => e.code) : null
    while (queue.keys().length < (${waits} ? 2 : 1)) await new Promise((r) => setTimeout(r, 20))
    const leadership = await client.election('election', { ttl: 60 }).campaign('me')
    leadership.onLost((r) => console.log('leadership lost:', r))
    const reg = await client.register({ service: 'svc', id: 'child', addr: 'h:1', ttl: 60 })
    reg.onStateChange((s) => console.log('registration:', s))
    const view = await client.discover('svc')
    const sets = ${waits} ? (async () => { for await (const s of view) {} ; return 'ended' })() : null
    const leases = [...queue.keys().map((k) => k.split('/').pop()), leadership.leaseId.toString(16), reg.leaseId.toString(16)]
    console.log('ready', JSON.stringify(leases))
    switch (${JSON.stringify(ending)}) {
      case 'close':
        await client.close()
        console.log('waiter:', await waiting, 'sets:', await sets, 'held:', guard.isHeld, 'leader:', leadership.isLeader)
        console.log('done-at', Date.now())
        break
      case 'forgot':
        console.log('done-at', Date.now())
        break
      case 'exit':
        process.exit(3)
      case 'uncaught':
        setTimeout(() => { throw new Error('boom-uncaught') }, 0)
        break
      case 'rejection':
        Promise.reject(new Error('boom-rejected'))
        break
      case 'own-handler':
        process.on('SIGTERM', () => { console.log('app handler'); process.exit(0) })
        break
    }`
}

const endings = {
  close: { code: 0, out: [/waiter: CLOSED sets: ended held: false leader: false/], exitsBy: 'done-at' },
  forgot: { code: 0, exitsBy: 'done-at' },
  exit: { code: 3 },
  uncaught: { code: 1, stderr: 'boom-uncaught' },
  rejection: { code: 1, stderr: 'boom-rejected' },
  SIGTERM: { signal: 'SIGTERM', send: 'SIGTERM' },
  SIGINT: { signal: 'SIGINT', send: 'SIGINT' },
  'own-handler': { code: 0, send: 'SIGTERM', out: [/app handler/] },
}

for (const [ending, want] of Object.entries(endings)) {
  test(`ending by ${ending}: exits ${want.signal ?? `with ${want.code}`}, and etcd holds nothing of it right away`, async () => {
    const ns = `exit-${ending}/`
    const run = startNode(child(ns, ending))
    await until(() => /^ready /m.test(run.stdout()), 30000,
      () => `the child to be ready: ${tail(run.stdout(), 500)} ${tail(run.stderr(), 500)}`)
    const leases = JSON.parse(run.stdout().match(/^ready (.*)$/m)[1])
    assert.equal(leases.length, ending === 'forgot' ? 3 : 4, run.stdout())
    if (want.send) run.child.kill(want.send)
    const exit = await within(run.exited, 30000, () => `the child's exit (${ending})`)
    const r = { ...exit, stdout: run.stdout(), stderr: run.stderr() }
    // etcd, read right after the exit: no key under the child's namespace, no lease of it.
    const left = await client.config(ns, { prefix: true, reconcileIntervalMs: 0 })
    const keys = left.keys()
    left.close()
    const alive = []
    for (const id of leases) if (await client.leaseExists(BigInt(`0x${id}`))) alive.push(id)
    assert.deepEqual({ keys, alive }, { keys: [], alive: [] }, `left behind by the child; ${both(r)}`)
    if (want.signal) assert.equal(r.signal, want.signal, both(r))
    else assert.equal(r.code, want.code, both(r))
    for (const re of want.out ?? []) assert.match(r.stdout, re, both(r))
    assert.doesNotMatch(r.stdout, /lost:/, `onLost fired on a normal end: ${both(r)}`)
    const odd = unexpectedStderr(r.stderr, want.stderr)
    assert.deepEqual(odd.slice(0, 5), [], `${odd.length} unexpected stderr lines; ${both(r)}`)
    if (want.stderr) assert.match(r.stderr, new RegExp(want.stderr), both(r))
    if (want.exitsBy) {
      const ms = exitDelay(r, want.exitsBy)
      assert.ok(ms < EXIT_MS, `exited ${ms} ms after the script ended`)
    }
  })
}

test('a top-level await on a contended lock keeps the process alive until it is acquired', async () => {
  const holder = await client.lock('exit-contended/lock', { ttl: 60 }).acquire()
  const run = startNode(`
    import { Client } from 'etcd-recipes'
    const client = await Client.connect({ endpoints: ${eps()} })
    console.log('waiting')
    const guard = await client.lock('exit-contended/lock', { ttl: 60 }).acquire()
    console.log('acquired', guard.leaseId.toString(16))
    console.log('done-at', Date.now())`)
  const queued = await client.config('exit-contended/lock/', { prefix: true, reconcileIntervalMs: 0 })
  await until(() => queued.keys().length === 2, 30000, () => `the child to queue (${queued.keys().length} keys; ${tail(run.stdout(), 300)})`)
  queued.close()
  await holder.release()
  const exit = await within(run.exited, 30000, 'the child exit')
  const r = { ...exit, stdout: run.stdout(), stderr: run.stderr() }
  assert.equal(r.code, 0, both(r)) // not 13 (unsettled top-level await)
  const lease = r.stdout.match(/acquired (\w+)/)?.[1]
  assert.ok(lease, both(r))
  assert.equal(await client.leaseExists(BigInt(`0x${lease}`)), false, 'the forgotten guard was released at exit')
  assert.deepEqual(unexpectedStderr(r.stderr), [], both(r))
  assert.ok(exitDelay(r, 'done-at') < EXIT_MS)
})

test('CommonJS require works and exits by itself after client.close(); lost() is null on a normal end', async () => {
  const r = await runNode(`
    const { Client, Session } = require('etcd-recipes')
    ;(async () => {
      const client = await Client.connect({ endpoints: ${eps()} })
      const s = await client.session({ ttl: 5 })
      s.onLost(() => console.log('lost-callback'))
      s.lost().then((r) => console.log('lost:', r))
      console.log(s instanceof Session ? 'session-ok' : 'bad')
      console.log('closing-at', Date.now())
      await client.close()
    })()`, { type: 'commonjs' })
  assert.equal(r.code, 0, both(r))
  assert.match(r.stdout, /session-ok/)
  assert.match(r.stdout, /lost: null/)
  assert.doesNotMatch(r.stdout, /lost-callback/)
  const ms = exitDelay(r, 'closing-at')
  assert.ok(ms < EXIT_MS, `exited ${ms} ms after close() was called`)
})

test('ESM import (named and default) works; an awaited lost() keeps the process alive until the close', async () => {
  const r = await runNode(`
    import { Client } from 'etcd-recipes'
    import etcdRecipes from 'etcd-recipes'
    import { EtcdCluster } from 'etcd-recipes/testing'
    if (etcdRecipes.Client !== Client || typeof EtcdCluster.start !== 'function') throw new Error('exports differ')
    const client = await Client.connect({ endpoints: ${eps()} })
    const s = await client.session({ ttl: 5 })
    const pending = s.lost() // awaited below: keeps the process alive until the close
    setTimeout(() => client.close(), 300)
    console.log('lost:', await pending)`)
  assert.equal(r.code, 0, both(r))
  assert.match(r.stdout, /lost: null/)
})

test('process.exit() with a pending request and an open session never crashes', async () => {
  const r = await runNode(`
    import { Client } from 'etcd-recipes'
    const client = await Client.connect({ endpoints: ${eps()} })
    await client.session({ ttl: 5 })
    client.session({ ttl: 5 })
    client.put('x', 'y')
    process.exit(7)`)
  assert.equal(r.code, 7, both(r))
  assert.equal(r.signal, null)
  assert.deepEqual(unexpectedStderr(r.stderr), [], both(r))
})

test('ETCD_RECIPES_LOG switches core tracing output on (stderr)', async () => {
  const src = `
    const { Client } = require('etcd-recipes')
    Client.connect({ endpoints: ${eps()} }).then((c) => c.close())`
  const on = await runNode(src, { type: 'commonjs', env: { ETCD_RECIPES_LOG: 'debug' } })
  assert.equal(on.code, 0, both(on))
  assert.match(on.stderr, /connected to etcd/, tail(on.stderr))
  const off = await runNode(src, { type: 'commonjs', env: { ETCD_RECIPES_LOG: '' } })
  assert.equal(off.code, 0, both(off))
  assert.doesNotMatch(off.stderr, /connected to etcd/, tail(off.stderr))
})
