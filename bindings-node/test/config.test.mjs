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
  assert.deepEqual(Object.fromEntries(Object.entries(view.snapshot()).map(([k, v]) => [k, v.toString()])), { 'flags/a': '3' })
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
    const snap = () => JSON.stringify(Object.fromEntries(Object.entries(view.snapshot()).map(([k, v]) => [k, v.toString()])))
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
