// The config view's JS mirror: every read is served from one Map that core's applied batches
// are written into, one batch per call. So a two-key transaction is never seen half applied
// between two turns of the event loop, the mirror is etcd's state at the revision it reports,
// a change handed out is already readable, and close() freezes the mirror.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { Client } from 'etcd-recipes'
import { EtcdCluster } from 'etcd-recipes/testing'
import { within, until } from '../testlib/helpers.mjs'

let etcd
let client

before(async () => {
  etcd = await EtcdCluster.start()
  client = await Client.connect({ endpoints: etcd.endpoints, namespace: 'mirror/' })
})
after(async () => {
  await client?.close()
  await etcd?.close()
})

const turn = () => new Promise((resolve) => setImmediate(resolve))

test('a two-key transaction is never seen half applied between turns of the event loop', async () => {
  const view = await client.config('tx/', { prefix: true, reconcileIntervalMs: 0 })
  const torn = []
  const seen = new Set()
  let stop = false
  let turns = 0
  // Reads in every turn while the transactions land: within one turn both keys are equal.
  const reader = (async () => {
    let last = 0
    while (!stop) {
      turns++
      const a = view.getString('tx/a')
      const b = view.get('tx/b')?.toString() ?? null
      const snap = view.snapshot()
      const sa = snap.values['tx/a']?.toString() ?? null
      const sb = snap.values['tx/b']?.toString() ?? null
      if (a !== b || sa !== sb || sa !== a) torn.push(`a=${a} b=${b} snapshot a=${sa} b=${sb} at ${snap.revision}`)
      if (view.revision < last) torn.push(`revision ${last} then ${view.revision}`)
      last = view.revision
      if (a !== null) seen.add(Number(a))
      await turn()
    }
  })()
  const n = 300
  const guard = await client.lock('tx-writer').acquire()
  let rev = 0
  for (let i = 1; i <= n; i++) {
    rev = await guard.txn([{ kind: 'put', key: 'tx/a', value: String(i) }, { kind: 'put', key: 'tx/b', value: String(i) }])
  }
  await guard.release()
  await until(() => seen.has(n), 15000, `the reader at ${n} (revision ${rev})`)
  stop = true
  await reader
  assert.deepEqual(torn.slice(0, 5), [], `${torn.length} torn reads in ${turns} turns`)
  assert.ok(seen.size > 5, `the reader saw only ${[...seen]}`)
  view.close()
})

/** etcd's own Get of `prefix` at `revision` (etcdctl, not our client). */
function etcdAt (cluster, prefix, revision) {
  const out = execFileSync(cluster.etcdctl[0], [...cluster.etcdctl.slice(1), 'get', '--prefix', prefix, `--rev=${revision}`, '-w', 'json'],
    { env: { ...process.env, ETCDCTL_API: '3' }, encoding: 'utf8' })
  const kvs = JSON.parse(out).kvs ?? []
  return Object.fromEntries(kvs.map((kv) => [Buffer.from(kv.key, 'base64').toString(), Buffer.from(kv.value ?? '', 'base64')]))
}

/** A write, again until etcd is back (the test restarts it). */
async function retrying (op) {
  const deadline = Date.now() + 30000
  for (;;) {
    try {
      return await op()
    } catch (e) {
      if (Date.now() > deadline) throw e
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
}

test('the mirror is etcd\'s state at its revision after writes, a compaction and a re-read', { timeout: 120000 }, async () => {
  const cluster = await EtcdCluster.start()
  const c = await Client.connect({ endpoints: cluster.endpoints, requestTimeoutMs: 5000 })
  try {
    let seed = 16
    const rnd = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648 }
    const keys = Array.from({ length: 40 }, (_, i) => `m/k${String(i).padStart(2, '0')}`)
    for (const k of keys.slice(0, 20)) await c.put(k, 'init')
    const view = await c.config('m/', { prefix: true, reconcileIntervalMs: 0 })
    const writes = async (n, tag) => {
      for (let start = 0; start < n; start += 16) {
        await Promise.all(Array.from({ length: Math.min(16, n - start) }, (_, j) => {
          const k = keys[Math.floor(rnd() * keys.length)]
          return rnd() < 0.2 ? retrying(() => c.delete(k)) : retrying(() => c.put(k, `${tag}${start + j}`.repeat(1 + Math.floor(rnd() * 4))))
        }))
      }
    }
    const check = (snap) => {
      assert.deepEqual(snap.values, etcdAt(cluster, 'm/', snap.revision))
      assert.deepEqual(view.keys(), Object.keys(snap.values).sort())
      assert.equal(view.size, Object.keys(snap.values).length)
      for (const k of keys) {
        assert.deepEqual(view.get(k), snap.values[k] ?? null)
        assert.equal(view.has(k), k in snap.values)
      }
    }
    await writes(300, 'a')
    await cluster.compact()
    await writes(100, 'b')
    let rev = await c.put('m/mark', '1')
    await until(() => view.revision >= rev, 15000, `view at revision ${rev}`)
    check(view.snapshot())
    // The watch breaks; the view reads the whole prefix again (a reset batch) and goes on.
    await cluster.restart(0)
    await writes(200, 'c')
    rev = await retrying(() => c.put('m/mark', '2'))
    await until(() => view.revision >= rev, 30000, `view at revision ${rev} after the restart`)
    const snap = view.snapshot()
    assert.equal(snap.values['m/mark'].toString(), '2')
    check(snap)
    view.close()
  } finally {
    await c.close()
    await cluster.close()
  }
})

test('a change handed out is already readable', async () => {
  const view = await client.config('ryc/', { prefix: true, reconcileIntervalMs: 0 })
  const single = await client.config('ryc/x')
  const changes = view.changes()
  const mine = single.changes()
  for (let i = 0; i < 100; i++) {
    const v = `v${i}`
    const rev = await client.put('ryc/x', v)
    const { value: change } = await within(changes.next(), 15000, `change ${i}`)
    assert.deepEqual([change.key, change.new.toString(), change.revision], ['ryc/x', v, rev])
    assert.equal(view.getString('ryc/x'), v)
    assert.ok(view.revision >= rev)
    assert.equal(view.snapshot().values['ryc/x'].toString(), v)
    await within(mine.next(), 15000, `single change ${i}`)
    assert.equal(single.get().toString(), v)
    assert.equal(single.getString(), v)
  }
  view.close()
  single.close()
})

test('close freezes the mirror; reads go on', async () => {
  await client.put('cl/a', '1')
  const view = await client.config('cl/', { prefix: true })
  const rev = view.revision
  view.close()
  const rev2 = await client.put('cl/a', '2')
  await client.put('cl/b', 'new')
  // A view made now has both writes: they reached etcd's watchers, but not the closed view.
  const later = await client.config('cl/', { prefix: true })
  assert.ok(later.revision > rev2)
  assert.equal(later.getString('cl/a'), '2')
  later.close()
  assert.equal(view.getString('cl/a'), '1')
  assert.equal(view.get('cl/a').toString(), '1')
  assert.equal(view.has('cl/b'), false)
  assert.deepEqual(view.keys(), ['cl/a'])
  assert.equal(view.revision, rev)
  assert.deepEqual(view.snapshot(), { revision: rev, values: { 'cl/a': Buffer.from('1') } })
})

test('get hands out the view\'s Buffer: no copy per read, and writing into it leaves the other reads alone', async () => {
  await client.put('buf/a', '{"n":1}')
  await client.put('buf/bin', Buffer.from([0xff, 0x00]))
  const view = await client.config('buf/', { prefix: true })
  const a = view.get('buf/a')
  assert.equal(view.get('buf/a'), a) // the same object, read after read
  a[0] = 0x5b // '[': a caller writing into it
  assert.equal(view.getString('buf/a'), '{"n":1}')
  assert.deepEqual(view.getJson('buf/a'), { n: 1 })
  assert.deepEqual(view.snapshot().values['buf/a'], Buffer.from('{"n":1}'))
  const bin = view.get('buf/bin')
  bin[0] = 0x41
  assert.deepEqual(view.snapshot().values['buf/bin'], Buffer.from([0xff, 0x00]))
  assert.throws(() => view.getString('buf/bin'), (e) => e.code === 'DECODE' && /buf\/bin/.test(e.message) && /not UTF-8/.test(e.message))
  assert.throws(() => view.getJson('buf/bin'), (e) => e.code === 'DECODE' && /buf\/bin/.test(e.message))
  // A new value is a new Buffer.
  const rev = await client.put('buf/a', '{"n":2}')
  await until(() => view.revision >= rev, 15000, 'the new value')
  assert.notEqual(view.get('buf/a'), a)
  assert.equal(view.get('buf/a').toString(), '{"n":2}')
  // Bad arguments are typed errors, as before.
  assert.throws(() => view.get(3), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  assert.throws(() => view.get('buf/zz', 'not a buffer'), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  assert.throws(() => view.getString('buf/zz', 3), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  assert.throws(() => view.has(3), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  assert.deepEqual(view.get('buf/zz', Buffer.from('d')), Buffer.from('d'))
  assert.equal(view.get('buf/zz'), null)
  assert.equal(view.getString('buf/zz', 'd'), 'd')
  view.close()
})
