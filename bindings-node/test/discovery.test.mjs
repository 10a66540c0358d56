// Registration on a session, readiness, in-place updates, pickers and the down-instance
// policy, from Node, against a real etcd.
import { test, before, after, beforeEach } from 'node:test'
import assert from 'node:assert/strict'
import { Client } from 'etcd-recipes'
import { EtcdCluster } from 'etcd-recipes/testing'
import { within, until } from '../testlib/helpers.mjs'

let etcd
let client
let n = 0

before(async () => {
  etcd = await EtcdCluster.start()
})
beforeEach(async () => {
  await client?.close()
  client = await Client.connect({ endpoints: etcd.endpoints, namespace: `disc-${n++}/` })
})
after(async () => {
  await client?.close()
  await etcd?.close()
})

const ids = (list) => list.map((i) => i.id)
const hasIds = (view, want) =>
  until(() => ids(view.instances()).join() === want.join(), 15000, () => `view holds ${want} (has ${ids(view.instances())})`)

test('round robin in id order, sticky until the instance leaves, zone preference falls back, filters', async () => {
  const regs = [
    await client.register({ service: 'svc', id: 'a', addr: 'a:1', metadata: { zone: 'eu' } }),
    await client.register({ service: 'svc', id: 'b', addr: 'b:1', metadata: { zone: 'us' } }),
    await client.register({ service: 'svc', id: 'c', addr: 'c:1', metadata: { zone: 'us' } })
  ]
  const rr = await client.discover('svc')
  const sticky = await client.discover('svc', { picker: 'sticky' })
  const zoned = await client.discover('svc', { preferZone: 'eu' })
  await hasIds(rr, ['a', 'b', 'c'])
  assert.deepEqual(Array.from({ length: 6 }, () => rr.pick().id), ['a', 'b', 'c', 'a', 'b', 'c'])
  assert.ok(['b', 'c'].includes(rr.pick((i) => i.metadata.zone === 'us').id))
  assert.equal(rr.pick(() => false), null)
  assert.throws(() => rr.pick(() => { throw new Error('filter failed') }), /filter failed/)
  assert.equal(sticky.pick().id, 'a')
  assert.deepEqual(new Set(Array.from({ length: 20 }, () => sticky.pick().id)), new Set(['a']))
  assert.deepEqual(new Set(Array.from({ length: 5 }, () => zoned.pick().id)), new Set(['a']))
  await regs[0].close()
  await hasIds(sticky, ['b', 'c'])
  await hasIds(zoned, ['b', 'c'])
  const second = sticky.pick().id
  assert.notEqual(second, 'a')
  assert.deepEqual(new Set(Array.from({ length: 20 }, () => sticky.pick().id)), new Set([second]), 'sticky holds its new choice')
  assert.notEqual(zoned.pick(), null, 'the local zone emptied: any zone')
})

test('weighted picks follow the weights', async () => {
  const regs = []
  for (const [id, weight] of [['w1', 1], ['w3', 3], ['w0', 0]]) {
    regs.push(await client.register({ service: 'svc', id, addr: `${id}:1`, metadata: { weight } }))
  }
  const view = await client.discover('svc', { picker: 'weighted' })
  await hasIds(view, ['w0', 'w1', 'w3'])
  const N = 20000
  const counts = { w0: 0, w1: 0, w3: 0 }
  for (let i = 0; i < N; i++) counts[view.pick().id]++
  assert.equal(counts.w0, 0, JSON.stringify(counts))
  for (const [id, share] of [['w1', 0.25], ['w3', 0.75]]) {
    const tol = 5 * Math.sqrt(N * share * (1 - share)) // 5 standard deviations of a binomial count
    assert.ok(Math.abs(counts[id] - N * share) <= tol, `${id}: ${counts[id]} of ${N}, expected ${N * share} ± ${tol.toFixed(0)}`)
  }
  for (const r of regs) await r.close()
})

test('noteError takes an instance out until downPeriodMs has passed', async () => {
  const regs = [await client.register({ service: 'svc', id: 'a', addr: 'a:1' }), await client.register({ service: 'svc', id: 'b', addr: 'b:1' })]
  const view = await client.discover('svc', { downThreshold: 2, downPeriodMs: 400 })
  await hasIds(view, ['a', 'b'])
  const a = view.instances()[0]
  view.noteError(a)
  assert.equal(view.isDown('a'), false)
  view.noteError('a')
  assert.equal(view.isDown(a), true)
  assert.deepEqual(ids(view.available()), ['b'])
  assert.deepEqual(new Set(Array.from({ length: 6 }, () => view.pick().id)), new Set(['b']))
  await until(() => !view.isDown('a'), 15000, 'a back after downPeriodMs')
  assert.deepEqual(ids(view.available()), ['a', 'b'])
  for (const r of regs) await r.close()
})

test('draining is honoured by discovery; readiness and metadata change in place', async () => {
  const reg = await client.register({ service: 'svc', id: 'a', addr: 'a:1', metadata: { v: 1 } })
  const other = await client.register({ service: 'svc', id: 'b', addr: 'b:1', readiness: 'not_ready' })
  const view = await client.discover('svc')
  const everyone = await client.discover('svc', { includeNotReady: true })
  await hasIds(view, ['a', 'b'])
  assert.deepEqual(ids(view.available()), ['a'])
  assert.deepEqual(view.instances().map((i) => i.readiness), ['ready', 'not_ready'])
  const events = view.events()
  const lease = reg.leaseId
  await reg.setReadiness('draining')
  const ev = await within(events.next(), 15000, 'updated event')
  assert.equal(ev.value.kind, 'updated')
  assert.equal(ev.value.instance.readiness, 'draining')
  assert.equal(reg.readiness, 'draining')
  assert.equal(view.pick(), null)
  await until(() => everyone.available().length === 2, 15000, 'includeNotReady sees both')
  assert.equal(await client.getString('svc/a'), '{"Op":0,"Addr":"a:1","Metadata":{"readiness":"draining","v":1}}')
  await reg.updateMetadata({ v: 2 })
  const ev2 = await within(events.next(), 15000, 'updated event')
  assert.deepEqual(ev2.value.instance.metadata, { v: 2, readiness: 'draining' }, 'readiness kept')
  assert.equal(reg.leaseId, lease, 'in place: same key, same lease')
  assert.equal(ev2.value.kind, 'updated')
  await events.return()
  assert.throws(() => reg.setReadiness('asleep'), (e) => e.code === 'INVALID_ARGUMENT')
  await assert.rejects(reg.updateMetadata({ weight: -2 }), (e) => e.code === 'INVALID_ARGUMENT')
  await other.close()
})

test('a registration on a session is lost with it and does not heal', async () => {
  const session = await client.session({ ttl: 10 })
  const reg = await session.register({ service: 'svc', id: 'a', addr: 'a:1' })
  assert.equal(reg.leaseId, session.leaseId)
  const view = await client.discover('svc')
  await hasIds(view, ['a'])
  const states = []
  reg.onStateChange((s) => states.push(s))
  await client.revokeLease(session.leaseId)
  await hasIds(view, [])
  await until(() => reg.state === 'lost', 15000, () => `registration lost (state ${reg.state})`)
  await until(() => states.includes('lost'), 15000, () => `onStateChange saw lost (${states})`)
  assert.equal(reg.reregistrations, 0)
  await assert.rejects(reg.updateMetadata({ v: 2 }), (e) => e.code === 'SESSION_LOST')
})

test('with selfHeal false a revoked registration stays gone', async () => {
  const reg = await client.register({ service: 'svc', id: 'a', addr: 'a:1', selfHeal: false })
  await client.revokeLease(reg.leaseId)
  await until(() => reg.state === 'lost', 15000, () => `registration lost (state ${reg.state})`)
  assert.deepEqual(await client.listInstances('svc'), [])
  assert.equal(reg.reregistrations, 0)
  await reg.close()
})

test('bad input is INVALID_ARGUMENT', async () => {
  const code = (c) => (e) => e.code === c
  assert.throws(() => client.discover('svc', { picker: 'fastest' }), code('INVALID_ARGUMENT'))
  await assert.rejects(client.discover('svc', { downThreshold: 0 }), code('INVALID_ARGUMENT'))
  assert.throws(() => client.discover('svc', { downThreshold: -1 }), code('INVALID_ARGUMENT'))
  await assert.rejects(client.discover('svc', { downPeriodMs: 0 }), code('INVALID_ARGUMENT'))
  assert.throws(() => client.register({ service: 'svc', id: 'a', addr: 'a:1', readiness: 'asleep' }), code('INVALID_ARGUMENT'))
  await assert.rejects(client.register({ service: 'svc', id: 'a', addr: 'a:1', metadata: { weight: -1 } }), code('INVALID_ARGUMENT'))
})
