// Service registry and discovery from Node: self-healing registration, live views.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Client } from 'etcd-recipes'
import { EtcdCluster } from 'etcd-recipes/testing'
import { within, until } from '../testlib/helpers.mjs'

let etcd
let client

before(async () => {
  etcd = await EtcdCluster.start()
  client = await Client.connect({ endpoints: etcd.endpoints, namespace: 'reg/' })
})
after(async () => {
  await client?.close()
  await etcd?.close()
})

test('register writes Go naming/endpoints JSON; discovery sees up, updated and down', async () => {
  const view = await client.discover('billing')
  assert.deepEqual(view.instances(), [])
  assert.equal(view.pickRoundRobin(), null)
  const events = view.events()
  const r1 = await client.register({ service: 'billing', id: 'b1', addr: '10.0.0.1:80', metadata: { zone: 'a' }, ttl: 5 })
  assert.equal(r1.key, 'reg/billing/b1')
  assert.deepEqual(JSON.parse(await client.getString('billing/b1')), { Op: 0, Addr: '10.0.0.1:80', Metadata: { zone: 'a' } })
  assert.equal(r1.state, 'registered')
  assert.equal(typeof r1.leaseId, 'bigint')
  const up = await within(events.next(), 15000, 'up event')
  assert.equal(up.value.kind, 'up')
  assert.equal(up.value.id, 'b1')
  assert.ok(up.value.revision > 0)
  assert.deepEqual(up.value.instance, { id: 'b1', addr: '10.0.0.1:80', metadata: { zone: 'a' }, readiness: 'ready' })
  await r1.updateMetadata({ zone: 'b' })
  const upd = await within(events.next(), 15000, 'updated event')
  assert.equal(upd.value.kind, 'updated')
  assert.deepEqual(upd.value.instance.metadata, { zone: 'b' })
  const r2 = await client.register({ service: 'billing', id: 'b2', addr: '10.0.0.2:80' })
  await until(() => view.instances().length === 2, 15000, () => `two instances (have ${view.instances().map((i) => i.id).join(', ')})`)
  assert.deepEqual(view.instances().map((i) => i.id), ['b1', 'b2'])
  assert.equal(view.instances()[1].metadata, null)
  const picks = new Set([view.pickRoundRobin().id, view.pickRoundRobin().id])
  assert.deepEqual([...picks].sort(), ['b1', 'b2'])
  assert.ok(['b1', 'b2'].includes(view.pickRandom().id))
  assert.deepEqual((await client.listInstances('billing')).map((i) => i.addr), ['10.0.0.1:80', '10.0.0.2:80'])
  await r2[Symbol.asyncDispose]() // deregisters
  assert.equal(r2.state, 'closed')
  const ev = []
  for (;;) {
    const e = await within(events.next(), 15000, () => `down event (after ${ev.join(', ')})`)
    ev.push(e.value.kind)
    if (e.value.kind === 'down') { assert.equal(e.value.id, 'b2'); break }
  }
  assert.equal(await client.get('billing/b2'), null)
  await events.return()
  await r1.close()
  view.close()
})

test('for await over a view yields the current set, then each change; break stops it', async () => {
  const view = await client.discover('web')
  const sizes = []
  let reg
  for await (const instances of view) {
    sizes.push(instances.length)
    if (instances.length === 0) reg = await client.register({ service: 'web', id: 'w1', addr: 'h:1' })
    else break
  }
  assert.deepEqual(sizes, [0, 1])
  await reg.close()
  await view[Symbol.asyncDispose]()
})

test('updates(): the current set first, then the whole set after each change; close() ends it', async () => {
  const r1 = await client.register({ service: 'upd', id: 'u1', addr: 'h:1' })
  const view = await client.discover('upd')
  const updates = view.updates()
  const ids = (step) => step.value.map((i) => i.id).join(',')
  assert.equal(ids(await within(updates.next(), 15000, 'the current set')), 'u1')
  const r2 = await client.register({ service: 'upd', id: 'u2', addr: 'h:2' })
  assert.equal(ids(await within(updates.next(), 15000, 'the set after u2')), 'u1,u2')
  await r1.close()
  assert.equal(ids(await within(updates.next(), 15000, 'the set after u1 left')), 'u2')
  const pending = updates.next()
  view.close()
  assert.equal((await within(pending, 15000, 'the end after close()')).done, true)
  await assert.rejects(view.changed(), { code: 'CLOSED' })
  await r2.close()
})

test('a registration heals itself after its lease is revoked', async () => {
  const view = await client.discover('healing')
  const reg = await client.register({ service: 'healing', id: 'h1', addr: 'h:1', ttl: 3 })
  const states = []
  reg.onStateChange((s) => states.push(s))
  const lease1 = reg.leaseId
  await client.revokeLease(lease1)
  await until(() => reg.reregistrations >= 1 && reg.state === 'registered', 20000, () => `re-registration (${reg.reregistrations}, ${reg.state})`)
  assert.notEqual(reg.leaseId, lease1)
  assert.equal(await client.leaseExists(reg.leaseId), true)
  assert.ok((await client.getString('healing/h1')) !== null, 'key is back')
  await until(() => view.instances().length === 1, 15000, 'discovery sees the instance again')
  await until(() => states.includes('registered'), 10000, () => `state callback (saw ${states.join(', ')})`)
  await reg.close()
  await until(() => view.instances().length === 0, 15000, 'gone after close')
  view.close()
})

test('a registration survives an etcd wipe (all leases and keys gone)', async () => {
  const c = await Client.connect({ endpoints: etcd.endpoints, namespace: 'wipe/' })
  const reg = await c.register({ service: 'svc', id: 'x', addr: 'h:2', ttl: 2 })
  await etcd.restartWiped()
  await until(async () => {
    try { return (await c.getString('svc/x')) !== null } catch { return false }
  }, 30000, () => `key re-put after wipe (${reg.reregistrations} re-registrations, ${reg.state})`)
  assert.ok(reg.reregistrations >= 1)
  await c.close()
  assert.equal(reg.state, 'closed')
  // the wipe lost the `reg/` client's data too; make sure it still works
  await client.put('after-wipe', 'ok')
})

test('bad registry input: TypeError INVALID_ARGUMENT', async () => {
  assert.throws(() => client.register({ service: 'svc', id: 'x' }), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  assert.throws(() => client.register({ service: 'svc', id: 'x', addr: 'a:1', ttl: 0 }), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  await assert.rejects(client.register({ service: '', id: 'x', addr: 'a:1' }), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  await assert.rejects(client.discover(''), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  assert.throws(() => client.register({ service: 'svc', id: 'x', addr: 'a:1', metadata: { big: 10n } }), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  const reg = await client.register({ service: 'svc', id: 'x', addr: 'a:1', metadata: { n: 10 } })
  assert.throws(() => reg.updateMetadata({ n: 10n }), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  assert.deepEqual(reg.instance.metadata, { n: 10 })
  await reg.close()
})
