// Leader election from Node: campaign, failover, observe, proclaim, resign, etcdctl interop.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Client } from 'etcd-recipes'
import { EtcdCluster } from 'etcd-recipes/testing'
import { within, until, spawnChild, tail } from '../testlib/helpers.mjs'

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

test('failover: the second candidate leads once the first loses its session; observe sees both', async () => {
  const a = await Client.connect({ endpoints: etcd.endpoints })
  const b = await Client.connect({ endpoints: etcd.endpoints })
  const observer = client.election('failover').observe()
  const seen = []
  const watching = (async () => {
    for await (const leader of observer) {
      seen.push(leader?.valueString ?? null)
      if (seen.includes('b')) break
    }
  })()
  const sa = await a.session({ ttl: 3 })
  const la = await sa.election('failover').campaign('a')
  assert.equal(la.isLeader, true)
  assert.deepEqual(la.value, Buffer.from('a'))
  assert.equal(la.valueString, 'a')
  assert.equal(la.name, 'failover')
  assert.equal(la.leaseId, sa.leaseId)
  const lbPending = b.election('failover', { ttl: 3 }).campaign('b')
  assert.equal((await client.election('failover').leader()).valueString, 'a')
  let lostReason = null
  la.onLost((r) => { lostReason = r })
  // The observer reports the latest leader when it is read, so let it see 'a' first.
  await until(() => seen.includes('a'), 15000, () => `observer to see a (saw ${JSON.stringify(seen)})`)
  await client.revokeLease(sa.leaseId)
  const lb = await within(lbPending, 15000, 'b elected')
  assert.equal(lb.isLeader, true)
  await within(la.lost(), 15000, 'a lost')
  assert.equal(la.isLeader, false)
  await assert.rejects(la.proclaim('still me?'), { code: 'NOT_LEADER' })
  await within(watching, 15000, () => `observer to see b (saw ${JSON.stringify(seen)})`)
  assert.deepEqual(seen.filter((v) => v !== null).slice(-2), ['a', 'b'])
  await until(() => lostReason !== null, 10000, 'onLost')
  const info = await client.leader('failover')
  assert.equal(info.valueString, 'b')
  assert.deepEqual(info.value, Buffer.from('b'))
  assert.equal(info.fencingToken, lb.fencingToken)
  assert.ok(lb.fencingToken > la.fencingToken)
  assert.equal(info.leaseId, lb.leaseId)
  assert.equal(info.key, lb.key)
  assert.equal(Object.hasOwn(info, 'revision'), false)
  await a.close()
  await b.close()
})

test('proclaim updates the value observers see; resign hands over; break ends the observer', async () => {
  const s1 = await client.session({ ttl: 5 })
  const s2 = await client.session({ ttl: 5 })
  const l1 = await s1.election('proclaim').campaign('v1')
  const obs = client.election('proclaim').observe()
  const first = await within(obs.next(), 15000, 'current leader')
  assert.equal(first.done, false)
  assert.equal(first.value.valueString, 'v1')
  await l1.proclaim('v2')
  const second = await within(obs.next(), 15000, 'proclaimed value')
  assert.equal(second.value.valueString, 'v2')
  assert.equal(l1.valueString, 'v2')
  const l2p = s2.election('proclaim').campaign('other')
  await l1[Symbol.asyncDispose]() // resign (what `await using` calls)
  const l2 = await within(l2p, 15000, 'handover')
  assert.equal(l2.isLeader, true)
  // The resign and the new candidate's key race (independent requests): if the delete
  // lands first, the observer may report "no leader" in between; it never repeats one.
  let step = await within(obs.next(), 15000, 'new leader')
  if (step.value === null) step = await within(obs.next(), 15000, 'new leader after a moment without one')
  assert.equal(step.done, false)
  assert.equal(step.value?.valueString, 'other')
  const ret = await obs.return()
  assert.equal(ret.done, true)
  assert.equal((await obs.next()).done, true)
  await l2.resign()
  assert.equal(await client.election('proclaim').leader(), null)
  await s1.close()
  await s2.close()
})

test('observe yields null when there is no leader, then the leader', async () => {
  const obs = client.election('empty').observe()
  const first = await within(obs.next(), 15000, 'first')
  assert.deepEqual(first, { done: false, value: null })
  const l = await client.election('empty').campaign(Buffer.from('bytes!'))
  const next = await within(obs.next(), 15000, 'leader')
  assert.deepEqual(next.value.value, Buffer.from('bytes!'))
  assert.equal(next.value.valueString, 'bytes!')
  await obs.return()
  await l.resign()
})

test('a resign is a normal end: lost() null, no onLost; fenced put/delete/txn while leading', async () => {
  const l = await client.election('normal-end', { ttl: 60 }).campaign('me')
  let called = null
  l.onLost((r) => { called = r })
  await l.put('normal-end-data/a', '1')
  await l.txn([{ kind: 'put', key: 'normal-end-data/b', value: '2' }, { kind: 'delete', key: 'normal-end-data/a' }])
  assert.ok((await l.delete('normal-end-data/b')) > 0)
  assert.equal(await client.get('normal-end-data/a'), null)
  const lost = l.lost()
  await l.resign()
  assert.equal(await within(lost, 15000, 'lost() after resign'), null)
  assert.equal(l.isLeader, false)
  assert.equal(await client.leaseExists(l.leaseId), false, 'the session made for the campaign is closed')
  await assert.rejects(l.put('normal-end-data/c', 'x'), { code: 'FENCED' })
  assert.equal(called, null)
})

test('campaign timeout and client close', async () => {
  const holder = await client.election('busy').campaign('holder')
  await assert.rejects(within(client.election('busy').campaign('late', { timeoutMs: 300 }), 15000, 'campaign with a 300 ms timeout'), { code: 'LOCK_TIMEOUT' })
  const c = await Client.connect({ endpoints: etcd.endpoints })
  const pending = c.election('busy').campaign('pending').then(() => 'elected', (e) => e)
  const obs = c.observeLeader('busy')
  assert.equal((await within(obs.next(), 15000, 'current leader')).value?.valueString, 'holder')
  const nextPending = obs.next()
  await c.close()
  assert.equal((await within(pending, 15000, 'pending campaign')).code, 'CLOSED')
  assert.equal((await within(nextPending, 15000, 'observer end')).done, true)
  await holder.resign()
})

test('a Node leader and `etcdctl elect` see the same election', async () => {
  const l = await client.election('interop-elect').campaign('node-leader')
  const ctl = spawnChild(etcd.etcdctlPath, [`--endpoints=${etcd.endpoints.join(',')}`, 'elect', '-l', 'interop-elect'], {
    env: { ...process.env, ETCDCTL_API: '3' },
  })
  try {
    await until(() => ctl.out().includes('node-leader'), 20000, () => `etcdctl elect -l to show the Node leader: ${tail(ctl.out(), 500)}`)
  } finally {
    ctl.child.kill('SIGTERM')
    await within(ctl.exited, 15000, 'etcdctl exit')
  }
  await l.resign()
})

test('bad election input: TypeError INVALID_ARGUMENT', () => {
  assert.throws(() => client.election(''), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  assert.throws(() => client.election('e').campaign(17), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  assert.throws(() => client.election('e').campaign('x', { timeoutMs: NaN }), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  assert.throws(() => client.election('e').campaign('x', 300), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  assert.throws(() => client.election('e', 'ttl'), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
  assert.throws(() => client.observeLeader(''), { name: 'TypeError', code: 'INVALID_ARGUMENT' })
})
