// Distributed lock from Node, against a real etcd (and etcdctl for interop).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Client } from 'etcd-recipes'
import { EtcdCluster } from 'etcd-recipes/testing'
import { within, until, sleep, spawnChild, tail } from '../testlib/helpers.mjs'

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

test('mutual exclusion across 4 clients: an exact counter', async () => {
  const clients = await Promise.all([0, 1, 2, 3].map(() => Client.connect({ endpoints: etcd.endpoints, namespace: 'mx/' })))
  const rounds = 8
  let inside = 0
  let maxInside = 0
  const tokens = []
  await Promise.all(clients.map(async (c) => {
    const lock = c.lock('counter-lock', { ttl: 5 })
    for (let i = 0; i < rounds; i++) {
      const guard = await lock.acquire({ timeoutMs: 60000 })
      inside++
      maxInside = Math.max(maxInside, inside)
      tokens.push(guard.fencingToken)
      const n = Number((await c.getString('counter')) ?? '0')
      await new Promise((r) => setImmediate(r))
      await guard.put('counter', String(n + 1)) // fenced write
      inside--
      await guard.release()
    }
  }))
  assert.equal(Number(await clients[0].getString('counter')), 4 * rounds)
  assert.equal(maxInside, 1)
  for (let i = 1; i < tokens.length; i++) assert.ok(tokens[i] > tokens[i - 1], `fencing tokens strictly increase: #${i} ${tokens[i]} after ${tokens[i - 1]}`)
  await Promise.all(clients.map((c) => c.close()))
})

test('tryAcquire and acquire timeout reject with LOCK_TIMEOUT while held', async () => {
  const lock = client.lock('busy', { ttl: 5 })
  const g = await lock.tryAcquire()
  assert.equal(g.isHeld, true)
  assert.match(g.key, /^busy\/[0-9a-f]+$/)
  await assert.rejects(client.lock('busy').tryAcquire(), { code: 'LOCK_TIMEOUT' })
  const t0 = Date.now()
  await assert.rejects(within(client.lock('busy').acquire({ timeoutMs: 300 }), 15000, 'acquire with a 300 ms timeout'),
    (e) => e.code === 'LOCK_TIMEOUT' && e instanceof Error)
  // Gives up after its 300 ms (plus slack for a loaded machine), not when the holder lets go.
  const ms = Date.now() - t0
  assert.ok(ms < 5000, `LOCK_TIMEOUT after ${ms} ms`)
  const waiter = client.lock('busy').acquire()
  await g.release()
  assert.equal(g.isHeld, false)
  const g2 = await within(waiter, 15000, 'waiter')
  assert.ok(g2.fencingToken > g.fencingToken)
  await g2[Symbol.asyncDispose]() // what `await using` calls
  assert.equal(g2.isHeld, false)
  assert.equal(await client.get(g2.key), null, 'released key is deleted')
  await g2.release() // idempotent
})

test('a guard names its lock and lease; release is a normal end (lost() null, no onLost); its own session is closed', async () => {
  const g = await client.lock('named', { ttl: 60 }).acquire()
  assert.equal(g.name, 'named')
  assert.equal(typeof g.leaseId, 'bigint')
  assert.equal(g.key, `named/${g.leaseId.toString(16)}`)
  let called = null
  g.onLost((r) => { called = r })
  const lost = g.lost()
  await g.release()
  assert.equal(await within(lost, 15000, 'guard.lost() after release'), null)
  assert.equal(await client.leaseExists(g.leaseId), false, 'the session made for the acquisition is closed')
  // onLost stays silent on a release (checked after more round trips, in which a call would have arrived).
  const s = await client.session({ ttl: 5 })
  const g2 = await s.lock('named').acquire()
  await g2.release()
  assert.equal(await client.leaseExists(s.leaseId), true, 'a shared session stays open after release')
  await s.close()
  assert.equal(called, null)
})

test('timeouts: the lock default (timeoutMs), overridden per acquire; session.lock takes one too', async () => {
  const held = await client.lock('slow').acquire()
  const t0 = Date.now()
  await assert.rejects(within(client.lock('slow', { timeoutMs: 200 }).acquire(), 15000, 'default timeout'), { code: 'LOCK_TIMEOUT' })
  assert.ok(Date.now() - t0 < 5000)
  await assert.rejects(within(client.lock('slow', { timeoutMs: 600000 }).acquire({ timeoutMs: 200 }), 15000, 'overridden timeout'), { code: 'LOCK_TIMEOUT' })
  const s = await client.session({ ttl: 5 })
  await assert.rejects(within(s.lock('slow', { timeoutMs: 200 }).acquire(), 15000, 'session lock timeout'), { code: 'LOCK_TIMEOUT' })
  assert.equal(s.isAlive, true, 'a timed-out wait leaves a shared session open')
  const contenders = await client.config('slow/', { prefix: true, reconcileIntervalMs: 0 })
  assert.deepEqual(contenders.keys(), [held.key], 'timed-out waiters removed their keys')
  contenders.close()
  await s.close()
  await held.release()
})

test('a lost session makes the guard lost: lost(), onLost, isHeld, FENCED writes', async () => {
  const session = await client.session({ ttl: 5 })
  const g = await session.lock('fragile').acquire()
  let cb = null
  g.onLost((r) => { cb = r })
  await g.put('fragile-data', 'v1')
  await client.revokeLease(session.leaseId)
  const reason = await within(g.lost(), 15000, 'guard.lost()')
  assert.equal(typeof reason, 'string')
  assert.equal(g.isHeld, false)
  await assert.rejects(g.put('fragile-data', 'v2'), { code: 'FENCED' })
  await assert.rejects(g.txn([{ kind: 'delete', key: 'fragile-data' }]), { code: 'FENCED' })
  await until(() => cb !== null, 10000, 'onLost callback')
  assert.equal(await client.getString('fragile-data'), 'v1')
})

test('guarded txn applies all ops atomically', async () => {
  await using_(client.lock('txn-lock').acquire(), async (g) => {
    const rev = await g.txn([
      { kind: 'put', key: 'a', value: '1' },
      { kind: 'put', key: 'b', value: Buffer.from('2') },
    ])
    assert.ok(rev > 0)
    await g.txn([{ kind: 'delete', key: 'a' }])
  })
  assert.equal(await client.get('a'), null)
  assert.equal(await client.getString('b'), '2')
})

async function using_ (p, f) {
  const g = await p
  try { await f(g) } finally { await g[Symbol.asyncDispose]() }
}

function etcdctlLock (name) {
  return spawnChild(etcd.etcdctlPath, [`--endpoints=${etcd.endpoints.join(',')}`, 'lock', name], {
    env: { ...process.env, ETCDCTL_API: '3' },
  })
}

async function stop (ctl) {
  ctl.child.kill('SIGTERM')
  return within(ctl.exited, 15000, 'etcdctl exit')
}

test('a Node lock and `etcdctl lock` exclude each other (same wire protocol)', async () => {
  // etcdctl holds: Node cannot take it until etcdctl lets go.
  const ctl = etcdctlLock('interop')
  await until(() => /interop\//.test(ctl.out()), 20000, () => `etcdctl to hold the lock: ${tail(ctl.out(), 500)}`)
  await assert.rejects(client.lock('interop').tryAcquire(), { code: 'LOCK_TIMEOUT' })
  const waiting = client.lock('interop', { ttl: 5 }).acquire()
  await stop(ctl)
  const g = await within(waiting, 20000, 'Node acquire after etcdctl exit')
  assert.equal(g.isHeld, true)
  // Node holds: etcdctl queues behind it and waits until Node releases. Loaded after Node
  // got the lock, this view of the contenders holds Node's key and, once etcdctl queued,
  // etcdctl's key (a later revision, under the same prefix: the same wire protocol).
  const contenders = await client.config('interop/', { prefix: true, reconcileIntervalMs: 0 })
  const ctl2 = etcdctlLock('interop')
  try {
    await until(() => contenders.keys().some((k) => k !== g.key), 20000,
      () => `etcdctl to queue a key under interop/ (keys: ${contenders.keys().join(', ')}; etcdctl: ${tail(ctl2.out(), 500)})`)
    // etcdctl is now waiting on Node's key. Give it a moment in which it must not take the
    // lock (a negative can only be checked over a window; this cannot fail spuriously).
    await sleep(1000)
    assert.doesNotMatch(ctl2.out(), /interop\//, 'etcdctl must not get the lock while Node holds it')
    assert.equal(g.isHeld, true)
    await g.release()
    await until(() => /interop\//.test(ctl2.out()), 20000, () => `etcdctl to get the lock after release: ${tail(ctl2.out(), 500)}`)
  } finally {
    contenders.close()
    await stop(ctl2)
  }
})

test('a pending acquire rejects with CLOSED when the client closes; held guards are released', async () => {
  const c = await Client.connect({ endpoints: etcd.endpoints })
  const held = await c.lock('closing').acquire()
  const pending = c.lock('closing').acquire().then(() => 'acquired', (e) => e)
  await c.close()
  const outcome = await within(pending, 15000, 'pending acquire')
  assert.equal(outcome.code, 'CLOSED')
  assert.equal(held.isHeld, false)
  assert.equal(await client.get(held.key), null)
})

test('bad lock input: TypeError INVALID_ARGUMENT', async () => {
  assert.throws(() => client.lock(''), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  assert.throws(() => client.lock(42), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  assert.throws(() => client.lock('x', { ttl: -1 }), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  assert.throws(() => client.lock('x').acquire({ timeoutMs: -5 }), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  assert.throws(() => client.lock('x', 'ttl=10'), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  assert.throws(() => client.lock('x').acquire(5), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  assert.throws(() => client.lock('x/'), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  await using_(client.lock('bad-txn').acquire(), async (g) => {
    assert.throws(() => g.txn([{ kind: 'upsert', key: 'k' }]), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
    assert.throws(() => g.txn([{ kind: 'put', key: 'k' }]), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
    assert.throws(() => g.txn([{ kind: 'delete', key: 'k', value: 'v' }]), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
    assert.throws(() => g.txn([{ type: 'put', key: 'k', value: 'v' }]), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  })
})
