// Semaphore and read-write lock from Node, against a real etcd.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Client } from 'etcd-recipes'
import { EtcdCluster } from 'etcd-recipes/testing'
import { within, until, sleep } from '../testlib/helpers.mjs'

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

const keysUnder = async (prefix) => {
  const view = await client.config(prefix, { prefix: true, reconcileIntervalMs: 0 })
  return view
}

test('semaphore: never more than its permits inside, across clients', async () => {
  const clients = await Promise.all([0, 1, 2, 3, 4].map(() => Client.connect({ endpoints: etcd.endpoints })))
  let inside = 0
  let most = 0
  await Promise.all(clients.map(async (c) => {
    const sem = c.semaphore('pool', 2, { ttl: 5 })
    assert.equal(sem.permits, 2)
    for (let i = 0; i < 4; i++) {
      const permit = await sem.acquire({ timeoutMs: 60000 })
      inside++
      most = Math.max(most, inside)
      assert.ok(inside <= 2, `${inside} holders inside a 2-permit semaphore`)
      await permit.put('pool-last', String(permit.fencingToken)) // fenced
      await sleep(5)
      inside--
      await permit.release()
    }
  }))
  await Promise.all(clients.map((c) => c.close()))
  assert.equal(most, 2)
  const view = await keysUnder('pool/')
  assert.deepEqual(view.keys(), [])
  view.close()
})

test('semaphore: timeouts, tryAcquire and FIFO leave no key behind', async () => {
  const sem = client.semaphore('q', 1, { ttl: 5 })
  const held = await sem.acquire()
  assert.equal(await client.getString(held.key), '1')
  await assert.rejects(sem.tryAcquire(), { code: 'LOCK_TIMEOUT' })
  await assert.rejects(sem.acquire({ timeoutMs: 200 }), { code: 'LOCK_TIMEOUT' })
  await assert.rejects(client.semaphore('q', 1, { timeoutMs: 100 }).acquire(), { code: 'LOCK_TIMEOUT' })
  const view = await keysUnder('q/')
  assert.deepEqual(view.keys(), [held.key])
  const order = []
  const waiters = []
  for (let i = 0; i < 3; i++) {
    waiters.push(sem.acquire().then(async (g) => { order.push(i); await g.release() }))
    await until(() => view.keys().length === 2 + i, undefined, 'waiter key')
  }
  await held.release()
  await within(Promise.all(waiters))
  assert.deepEqual(order, [0, 1, 2])
  await until(() => view.keys().length === 0, undefined, 'no keys left')
  view.close()
})

test('semaphore: session lost while waiting and while holding', async () => {
  const sem = client.semaphore('sl', 1, { ttl: 5 })
  const held = await sem.acquire()
  const session = await client.session({ ttl: 10 })
  const view = await keysUnder('sl/')
  const waiting = session.semaphore('sl', 1).acquire()
  waiting.catch(() => {}) // asserted below; it may reject before that
  await until(() => view.keys().length === 2, undefined, 'waiter key')
  await client.revokeLease(session.leaseId)
  await assert.rejects(within(waiting), { code: 'SESSION_LOST' })
  await until(() => view.keys().length === 1, undefined, 'lost waiter key gone')

  const next = sem.acquire()
  await until(() => view.keys().length === 2, undefined, 'next waiter key')
  const reasons = []
  held.onLost((r) => reasons.push(r))
  await client.revokeLease(held.leaseId)
  const permit = await within(next)
  assert.notEqual(await within(held.lost()), null)
  await assert.rejects(held.put('sl-out', 'stale'), { code: 'FENCED' })
  await permit.put('sl-out', 'fresh')
  await permit.release()
  assert.equal(await permit.lost(), null)
  await until(() => reasons.length === 1, undefined, 'onLost called')
  view.close()
})

test('semaphore: client close ends a wait; bad input and mixed counts are refused', async () => {
  const held = await client.semaphore('cc', 1).acquire()
  const other = await Client.connect({ endpoints: etcd.endpoints })
  const view = await keysUnder('cc/')
  const waiting = other.semaphore('cc', 1).acquire()
  waiting.catch(() => {}) // asserted below; it may reject before that
  await until(() => view.keys().length === 2, undefined, 'waiter key')
  await other.close()
  await assert.rejects(within(waiting), { code: 'CLOSED' })
  await until(() => view.keys().length === 1, undefined, 'closed waiter key gone')
  await assert.rejects(client.semaphore('cc', 3).acquire(), { code: 'INVALID_ARGUMENT' })
  await held.release()
  for (const permits of [0, -1, 1.5, 2 ** 40]) {
    assert.throws(() => client.semaphore('x', permits), { code: 'INVALID_ARGUMENT' })
  }
  assert.throws(() => client.semaphore('x', '3'), { code: 'INVALID_ARGUMENT' })
  assert.throws(() => client.semaphore('a/', 1), { code: 'INVALID_ARGUMENT' })
  view.close()
})

test('rwlock: readers share, a waiting writer goes before later readers', async () => {
  const rw = client.rwlock('ws', { ttl: 5 })
  assert.equal(rw.name, 'ws')
  const r1 = await rw.read()
  const r2 = await rw.read()
  assert.match(r1.key, /^ws\/read\/\d+$/)
  await assert.rejects(rw.tryWrite(), { code: 'LOCK_TIMEOUT' })
  const view = await keysUnder('ws/')
  const order = []
  const writer = rw.write().then((g) => { order.push('writer'); return g })
  await until(() => view.keys().some((k) => k.startsWith('ws/write/')), undefined, 'writer key')
  await assert.rejects(rw.tryRead(), { code: 'LOCK_TIMEOUT' })
  await assert.rejects(rw.read({ timeoutMs: 200 }), { code: 'LOCK_TIMEOUT' })
  const late = rw.read().then(async (g) => { order.push('reader'); await g.release() })
  await until(() => view.keys().length === 4, undefined, 'late reader key')
  await r1.release()
  await r2.release()
  const w = await within(writer)
  await sleep(100) // a window for a wrong entry
  assert.deepEqual(order, ['writer'])
  await w.release()
  await within(late)
  assert.deepEqual(order, ['writer', 'reader'])
  await until(() => view.keys().length === 0, undefined, 'no keys left')
  view.close()
})

test('rwlock: session loss while waiting and holding; timeouts leave no key', async () => {
  const rw = client.rwlock('sl2', { ttl: 5 })
  const w = await rw.write()
  await assert.rejects(client.rwlock('sl2', { timeoutMs: 100 }).write(), { code: 'LOCK_TIMEOUT' })
  const view = await keysUnder('sl2/')
  const session = await client.session({ ttl: 10 })
  const waiting = session.rwlock('sl2').read()
  waiting.catch(() => {}) // asserted below; it may reject before that
  await until(() => view.keys().length === 2, undefined, 'reader key')
  await client.revokeLease(session.leaseId)
  await assert.rejects(within(waiting), { code: 'SESSION_LOST' })
  const next = rw.read()
  await until(() => view.keys().length === 2, undefined, 'next reader key')
  await client.revokeLease(w.leaseId)
  const r = await within(next)
  assert.notEqual(await within(w.lost()), null)
  await assert.rejects(w.put('sl2-out', 'stale'), { code: 'FENCED' })
  assert.ok(r.fencingToken > w.fencingToken)
  await r.release()
  assert.throws(() => client.rwlock(''), { code: 'INVALID_ARGUMENT' })
  await until(() => view.keys().length === 0, undefined, 'no keys left')
  view.close()
})
