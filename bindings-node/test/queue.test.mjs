// Barrier, DoubleBarrier, Queue and PriorityQueue from Node, against a real etcd. (The
// protocols and faults are covered in core/tests/barrier.rs and core/tests/queue.rs; here:
// the face's conversions, errors and options.)
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Client } from 'etcd-recipes'
import { EtcdCluster } from 'etcd-recipes/testing'
import { within, until, sleep } from '../testlib/helpers.mjs'

const WINDOW_MS = 300 // time for a waiter to get into its wait (never asserted on)

let etcd
let n = 0
const ns = () => `q${++n}/`
const connect = () => Client.connect({ endpoints: etcd.endpoints, namespace: ns() })
const settled = (p) => {
  let done = false
  p.then(() => { done = true }, () => { done = true })
  return () => done
}

before(async () => { etcd = await EtcdCluster.start() })
after(async () => { await etcd?.close() })

test('queue: FIFO, values, tryDequeue, length, timeouts, bad input', async () => {
  const c = await connect()
  try {
    const q = c.queue('jobs')
    assert.equal(q.name, 'jobs')
    assert.equal(await q.tryDequeue(), null)
    const key = await q.enqueue(Buffer.from([0, 1]))
    assert.match(key, /\/jobs\/\d+$/)
    await q.enqueue('text')
    await q.enqueue('{"n":1}')
    assert.equal(await q.length(), 3)
    const first = await q.dequeue()
    assert.deepEqual([...first.value], [0, 1])
    assert.equal(first.key, key)
    assert.ok(first.revision > 0)
    assert.equal((await q.dequeue({ timeoutMs: 1000 })).valueString, 'text')
    assert.deepEqual((await q.tryDequeue()).valueJson(), { n: 1 })
    assert.equal(await q.length(), 0)
    await assert.rejects(q.dequeue({ timeoutMs: 100 }), { code: 'LOCK_TIMEOUT' })
    await assert.rejects(c.queue('jobs', { timeoutMs: 100 }).dequeue(), { code: 'LOCK_TIMEOUT' })
    assert.throws(() => c.queue('bad/'), { code: 'INVALID_ARGUMENT' })
    assert.throws(() => q.dequeue({ timeoutMs: -1 }), { code: 'INVALID_ARGUMENT' })
    assert.throws(() => q.enqueue(42), { code: 'INVALID_ARGUMENT' })
  } finally { await c.close() }
})

test('priority queue: lower number first, FIFO within a priority', async () => {
  const c = await connect()
  try {
    const q = c.priorityQueue('work')
    for (const [v, p] of [['e1', 5], ['a1', 1], ['z', 65535], ['e2', 5], ['top', 0], ['a2', 1]]) await q.enqueue(v, p)
    const got = []
    for (let item; (item = await q.tryDequeue()) !== null;) got.push(item.valueString)
    assert.deepEqual(got, ['top', 'a1', 'a2', 'e1', 'e2', 'z'])
    for (const bad of [-1, 65536, 1.5, NaN]) assert.throws(() => q.enqueue('x', bad), { code: 'INVALID_ARGUMENT' })
  } finally { await c.close() }
})

test('concurrent consumers get every item once; a waiting dequeue gets the next item; close ends it', async () => {
  const c = await connect()
  const q = c.queue('shared')
  const got = []
  const consumer = async () => {
    for (;;) {
      try { got.push((await q.dequeue({ timeoutMs: 1000 })).valueString) } catch (e) {
        assert.equal(e.code, 'LOCK_TIMEOUT')
        return
      }
    }
  }
  const producer = async (p) => { for (let i = 0; i < 25; i++) await q.enqueue(`${p}-${i}`) }
  await within(Promise.all([consumer(), consumer(), consumer(), producer(0), producer(1)]))
  assert.equal(got.length, 50, `handed out ${got.length}`)
  assert.equal(new Set(got).size, 50, 'an item was handed out twice')

  const waiter = q.dequeue()
  const done = settled(waiter)
  await sleep(WINDOW_MS)
  assert.ok(!done(), 'dequeue returned from an empty queue')
  await q.enqueue('hello')
  assert.equal((await within(waiter)).valueString, 'hello')
  // Settled into a value at once: the rejection comes during close(), before we look.
  const pending = c.priorityQueue('p').dequeue().then(() => null, (e) => e)
  await sleep(WINDOW_MS)
  await c.close()
  assert.equal((await within(pending))?.code, 'CLOSED')
})

test('barrier: hold, wait, release', async () => {
  const c = await connect()
  try {
    const b = c.barrier('gate')
    assert.equal(b.name, 'gate')
    await within(b.wait())
    assert.equal(await b.hold(), true)
    assert.equal(await b.hold(), false)
    assert.equal(await b.isHeld(), true)
    await assert.rejects(b.wait({ timeoutMs: 100 }), { code: 'LOCK_TIMEOUT' })
    const waiters = [b.wait(), b.wait()]
    const done = waiters.map(settled)
    await sleep(WINDOW_MS)
    assert.ok(!done.some((d) => d()), 'a wait returned while held')
    assert.equal(await b.release(), true)
    await within(Promise.all(waiters))
    assert.equal(await b.release(), false)
  } finally { await c.close() }
})

test('double barrier: parties enter and leave together', async () => {
  const c = await connect()
  try {
    const parties = [0, 1, 2].map(() => c.doubleBarrier('round', 3, { ttl: 10 }))
    assert.equal(parties[0].count, 3)
    const entering = parties.slice(0, 2).map((p) => p.enter())
    const entered = entering.map(settled)
    await sleep(WINDOW_MS)
    assert.ok(!entered.some((d) => d()), 'entered before the third party')
    await parties[2].enter()
    await within(Promise.all(entering))
    const leaving = parties.slice(0, 2).map((p) => p.leave())
    const left = leaving.map(settled)
    await sleep(WINDOW_MS)
    assert.ok(!left.some((d) => d()), 'left before every party left')
    await parties[2].leave()
    await within(Promise.all(leaving))
    assert.equal(await parties[0].lost(), null)

    await assert.rejects(c.doubleBarrier('alone', 2).enter({ timeoutMs: 200 }), { code: 'LOCK_TIMEOUT' })
    await assert.rejects(c.doubleBarrier('never', 2).leave(), { code: 'INVALID_ARGUMENT' })
    for (const bad of [0, -1, 1.5]) assert.throws(() => c.doubleBarrier('x', bad), { code: 'INVALID_ARGUMENT' })

    // Not entered: lost() resolves at once with null; onLost never fires.
    const idle = c.doubleBarrier('idle', 2)
    idle.onLost(() => assert.fail('onLost on a party that never entered'))
    assert.equal(await within(idle.lost()), null)
  } finally { await c.close() }
})
