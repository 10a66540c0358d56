// Config cache from Node: synchronous local reads, changes, convergence after compaction.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Client } from 'etcd-recipes'
import { EtcdCluster } from 'etcd-recipes/testing'
import { within, until } from '../testlib/helpers.mjs'

let etcd
let client

before(async () => {
  etcd = await EtcdCluster.start()
  client = await Client.connect({ endpoints: etcd.endpoints, namespace: 'cfg/' })
})
after(async () => {
  await client?.close()
  await etcd?.close()
})

test('a key view: sync get/getString/getJson, follows puts and deletes', async () => {
  await client.put('app/feature', JSON.stringify({ enabled: true, pct: 10 }))
  const view = await client.config('app/feature')
  assert.equal(view.key, 'app/feature')
  assert.equal(view.isPrefix, false)
  assert.deepEqual(view.getJson(), { enabled: true, pct: 10 })
  assert.ok(Buffer.isBuffer(view.get()))
  assert.equal(view.getString('app/feature'), '{"enabled":true,"pct":10}')
  const rev = view.revision
  await client.put('app/feature', '{"enabled":false}')
  await until(() => view.getJson()?.enabled === false, 15000, 'update')
  assert.ok(view.revision > rev)
  await client.delete('app/feature')
  await until(() => view.get() === null, 15000, 'delete')
  assert.equal(view.getJson(), null)
  await client.put('app/feature', '{not json')
  await until(() => view.get() !== null, 15000, 'bad json put')
  assert.throws(() => view.getJson(), (e) => e.code === 'DECODE' && /app\/feature/.test(e.message))
  await client.put('app/feature', Buffer.from([0xff, 0xfe]))
  await until(() => view.get()?.[0] === 0xff, 15000, 'binary put')
  assert.throws(() => view.getString(), { code: 'DECODE' })
  view.close()
})

test('a prefix view and for await over changes (break unsubscribes)', async () => {
  await client.put('flags/a', '1')
  const view = await client.config('flags/', { prefix: true, reconcileIntervalMs: 0 })
  assert.deepEqual(view.keys(), ['flags/a'])
  assert.equal(view.has('flags/a'), true)
  const seen = []
  // changes() subscribes when called: every change after this line is delivered, in order.
  const changes = view.changes()
  const watching = (async () => {
    for await (const change of changes) {
      seen.push([change.key, change.old?.toString() ?? null, change.new?.toString() ?? null, change.deleted])
      if (change.deleted) break
    }
  })()
  await client.put('flags/b', '2')
  await client.put('flags/a', '3')
  await client.delete('flags/b')
  await within(watching, 15000, () => `the changes iterator (saw ${seen.length}: ${JSON.stringify(seen)})`)
  assert.deepEqual(seen, [['flags/b', null, '2', false], ['flags/a', '1', '3', false], ['flags/b', '2', null, true]])
  assert.deepEqual(Object.fromEntries(Object.entries(view.snapshot().values).map(([k, v]) => [k, v.toString()])), { 'flags/a': '3' })
  await view[Symbol.asyncDispose]()
})

test('for await over the view itself yields changes; client.close() ends it', async () => {
  const c = await Client.connect({ endpoints: etcd.endpoints, namespace: 'cfg/' })
  const view = await c.config('iter/', { prefix: true })
  const seen = []
  const watching = (async () => { for await (const change of view) seen.push(change.key) })()
  await client.put('iter/a', '1')
  await until(() => seen.length === 1, 15000, 'the change')
  await c.close()
  await within(watching, 15000, 'the iterator end after client.close()')
  assert.deepEqual(seen, ['iter/a'])
})

test('a view converges after its watch falls behind a compaction (3 members, one frozen)', { timeout: 150000 }, async () => {
  const cluster = await EtcdCluster.start({ members: 3 })
  try {
    const writer = await Client.connect({ endpoints: cluster.endpoints.slice(1), requestTimeoutMs: 5000 })
    const reader = await Client.connect({ endpoints: [cluster.endpoints[0]], requestTimeoutMs: 2000 })
    for (let i = 0; i < 5; i++) await writer.put(`conv/k${i}`, 'old')
    const view = await reader.config('conv/', { prefix: true, reconcileIntervalMs: 0 })
    assert.equal(view.keys().length, 5)
    cluster.pause(0) // the reader's member stops answering
    await until(async () => {
      try { await writer.put('conv/k0', 'new0'); return true } catch { return false }
    }, 30000, 'writes through the other members')
    for (let i = 1; i < 5; i++) await writer.put(`conv/k${i}`, `new${i}`)
    await writer.delete('conv/k4')
    await writer.put('conv/k5', 'new5')
    // compact past everything the frozen member's watcher has seen
    const compactedAt = await cluster.compact(1)
    assert.ok(compactedAt > view.revision, `compacted at ${compactedAt}, view at ${view.revision}`)
    cluster.resume(0)
    const want = { 'conv/k0': 'new0', 'conv/k1': 'new1', 'conv/k2': 'new2', 'conv/k3': 'new3', 'conv/k5': 'new5' }
    const snap = () => JSON.stringify(Object.fromEntries(Object.entries(view.snapshot().values).map(([k, v]) => [k, v.toString()])))
    await until(() => snap() === JSON.stringify(want), 30000,
      () => `convergence after compaction (compacted at ${compactedAt}; view at revision ${view.revision}: ${snap().slice(0, 500)})`)
    await reader.close()
    await writer.close()
  } finally {
    await cluster.close()
  }
})

test('bad config input', async () => {
  await assert.rejects(client.config(''), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  assert.throws(() => client.config('k', { reconcileIntervalMs: -1 }), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  assert.throws(() => client.config(3), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  const view = await client.config('k')
  assert.throws(() => view.get(5), { name: 'TypeError', code: 'INVALID_ARGUMENT', message: /get\(\): bad argument/ })
  assert.throws(() => view.getJson({}), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  view.close()
})

test('defaults and validators: a value that does not validate throws DECODE naming the key', async () => {
  await client.put('svc/pool', JSON.stringify({ size: 8 }))
  await client.put('svc/bad-pool', JSON.stringify({ size: 'big' }))
  await client.put('svc/port', '8080')
  const view = await client.config('svc/', { prefix: true })
  assert.equal(view.size, 3)
  class Pool {
    constructor (size) { this.size = size }
    static from (v) {
      if (typeof v?.size !== 'number') throw new RangeError('size: a number is required')
      return new Pool(v.size)
    }
  }
  const pool = view.getJson('svc/pool', { validate: Pool.from })
  assert.ok(pool instanceof Pool)
  assert.equal(pool.size, 8)
  assert.equal(view.getJson('svc/missing', { validate: Pool.from, default: 'none' }), 'none')
  assert.equal(view.getJson('svc/missing'), null)
  assert.equal(view.getJson('svc/port'), 8080)
  assert.equal(view.get('svc/missing', Buffer.from('d')).toString(), 'd')
  assert.equal(view.get('svc/port', Buffer.from('d')).toString(), '8080')
  assert.equal(view.getString('svc/missing', '80'), '80')
  assert.equal(view.getString('svc/port', '80'), '8080')
  // A present value that does not validate is an error naming the key, never the default.
  assert.throws(() => view.getJson('svc/bad-pool', { validate: Pool.from, default: new Pool(1) }), (e) =>
    e.code === 'DECODE' && e.key === 'svc/bad-pool' && /svc\/bad-pool/.test(e.message) && e.cause instanceof RangeError)
  assert.throws(() => view.getJson('svc/pool', { validate: 5 }), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  assert.throws(() => view.getJson('svc/pool', 'x'), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  view.close()
})

test('key and prefix subscriptions see only their changes, in order; snapshot carries its revision', async () => {
  const view = await client.config('sub/', { prefix: true, reconcileIntervalMs: 0 })
  const seen = { all: [], one: [], db: [] }
  const follow = async (name, changes) => { for await (const c of changes) seen[name].push(`${c.key}${c.deleted ? ' deleted' : ''}`) }
  const done = [follow('all', view.changes()), follow('one', view.changes({ key: 'sub/a' })), follow('db', view.changes({ prefix: 'sub/db/' }))]
  await client.put('sub/a', '1')
  await client.put('sub/db/host', 'h')
  await client.put('sub/ab', 'not sub/a')
  await client.put('sub/db/port', '5432')
  await client.put('sub/a', '2')
  const rev = await client.delete('sub/db/host').then(() => client.put('sub/end', 'x'))
  await until(() => seen.all.length === 7 && seen.one.length === 2 && seen.db.length === 3, 15000,
    () => `all ${seen.all.length}, one ${seen.one.length}, db ${seen.db.length}`)
  assert.deepEqual(seen.one, ['sub/a', 'sub/a'])
  assert.deepEqual(seen.db, ['sub/db/host', 'sub/db/port', 'sub/db/host deleted'])
  assert.throws(() => view.changes({ key: 'sub/a', prefix: 'sub/' }), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  const snap = view.snapshot()
  assert.equal(snap.revision, rev)
  assert.deepEqual(Object.keys(snap.values).sort(), ['sub/a', 'sub/ab', 'sub/db/port', 'sub/end'])
  assert.equal(snap.values['sub/a'].toString(), '2')
  view.close()
  await within(Promise.all(done), 15000, 'iterators end on close')
})

test('changes are handed out in order whether already at hand or awaited', async () => {
  // next() takes a change that is already there at once and asks the runtime otherwise;
  // either way the n-th call gets the n-th change, also with several calls outstanding.
  const view = await client.config('ord/', { prefix: true, reconcileIntervalMs: 0 })
  const changes = view.changes()
  let last = 0
  for (let i = 0; i < 3; i++) last = await client.put(`ord/k${i}`, `${i}`)
  await until(() => view.revision >= last, 15000, `view at revision ${last}`)
  const atHand = await Promise.all([changes.next(), changes.next(), changes.next()])
  assert.deepEqual(atHand.map((r) => [r.value.key, r.value.new.toString()]), [['ord/k0', '0'], ['ord/k1', '1'], ['ord/k2', '2']])
  const awaited = [changes.next(), changes.next(), changes.next()]
  for (let i = 3; i < 6; i++) await client.put(`ord/k${i}`, `${i}`)
  const got = await within(Promise.all(awaited), 15000, () => 'three awaited changes')
  assert.deepEqual(got.map((r) => [r.value.key, r.value.new.toString()]), [['ord/k3', '3'], ['ord/k4', '4'], ['ord/k5', '5']])
  view.close()
  const end = await within(changes.next(), 15000, () => 'the end of the changes after close()')
  assert.equal(end.done, true)
})
