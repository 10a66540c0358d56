// Leader loop and leader latch from Node, against a real etcd: one work at a time (a fenced
// counter), a revoked lease aborts the work's AbortSignal at once and another loop takes
// over, requeue off, hand-over when the work settles, close / client close while leading,
// the latch's awaitLeader / timeout / close, bad input.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Client } from 'etcd-recipes'
import { EtcdCluster } from 'etcd-recipes/testing'
import { within, until, sleep } from '../testlib/helpers.mjs'

let etcd
let admin

before(async () => {
  etcd = await EtcdCluster.start()
  admin = await Client.connect({ endpoints: etcd.endpoints })
})
after(async () => {
  await admin?.close()
  await etcd?.close()
})

const connect = (ns) => Client.connect({ endpoints: etcd.endpoints, namespace: ns })

test('one work at a time across 3 loops: a fenced counter', async () => {
  const clients = await Promise.all([0, 1, 2].map(() => connect('ctr/')))
  const st = { running: 0, most: 0, writes: 0, terms: 0 }
  const tokens = []
  const loops = clients.map((c, i) => c.leaderLoop('jobs', `n${i}`, { ttl: 5 }))
  for (const lp of loops) {
    lp.start(async (leadership, signal) => {
      assert.ok(signal instanceof AbortSignal)
      st.running++
      st.most = Math.max(st.most, st.running)
      tokens.push(leadership.fencingToken)
      try {
        for (let i = 0; i < 5; i++) {
          const v = Number((await clients[0].getString('counter')) ?? '0')
          await new Promise((r) => setImmediate(r))
          await leadership.put('counter', String(v + 1)) // fenced
          st.writes++
        }
      } finally {
        st.running--
        st.terms++
      }
    })
  }
  await until(() => st.terms >= 9, 30000, 'nine terms')
  for (const lp of loops) await lp.close()
  assert.equal(st.most, 1, 'two works at once')
  assert.equal(Number(await clients[0].getString('counter')), st.writes, 'increments lost')
  assert.deepEqual(tokens, [...tokens].sort((a, b) => a - b))
  assert.equal(await clients[0].leader('jobs'), null)
  for (const c of clients) await c.close()
})

test('a revoked lease aborts the signal at once; another loop takes over', async () => {
  const ttl = 20
  const clients = await Promise.all([0, 1, 2].map(() => connect('rev/')))
  const started = []
  const aborted = []
  const stops = []
  const loops = clients.map((c, i) => c.leaderLoop('svc', `n${i}`, { ttl }))
  loops.forEach((lp, i) => {
    lp.onStoppedLeading((e) => stops.push({ i, ...e }))
    lp.start((leadership, signal) => new Promise((resolve) => {
      started.push({ i, token: leadership.fencingToken, lease: leadership.leaseId })
      signal.addEventListener('abort', () => {
        aborted.push({ i, reason: signal.reason, at: Date.now() })
        resolve()
      })
    }))
  })
  try {
    await until(() => started.length === 1, undefined, 'a leader')
    const first = started[0]
    const t0 = Date.now()
    await admin.revokeLease(first.lease)
    await until(() => started.length === 2, undefined, 'a new leader')
    await until(() => aborted.length === 1, undefined, 'the old work aborted')
    assert.equal(aborted[0].i, first.i)
    assert.equal(aborted[0].reason.name, 'AbortError')
    assert.equal(aborted[0].reason.reason, 'lost')
    assert.ok(aborted[0].at - t0 < (ttl * 1000) / 4, `abort took ${aborted[0].at - t0} ms`)
    assert.notEqual(started[1].i, first.i)
    assert.ok(started[1].token > first.token)
    await until(() => stops.some((e) => e.reason === 'lost'), undefined, 'a lost event')
    const lost = stops.find((e) => e.reason === 'lost')
    assert.equal(lost.kind, 'stoppedLeading')
    assert.equal(lost.fencingToken, first.token)
    assert.ok(lost.detail)
    assert.ok(loops[started[1].i].isLeader)
  } finally {
    for (const lp of loops) await lp.close()
    for (const c of clients) await c.close()
  }
})

test('requeue: false runs one term; a rejection is reported, not fatal', async () => {
  const c = await connect('once/')
  for (const fail of [false, true]) {
    const lp = c.leaderLoop('once', 'me', { ttl: 10, requeue: false })
    const events = lp.events()
    let terms = 0
    await within(lp.run(async (leadership) => {
      terms++
      await leadership.put('once-out', 'done')
      if (fail) throw new Error('boom')
    }))
    assert.equal(terms, 1)
    assert.ok(lp.isClosed)
    const seen = []
    for await (const e of events) if (e.kind !== 'newLeader') seen.push(e)
    assert.deepEqual(seen.map((e) => [e.kind, e.reason ?? null]), [['startedLeading', null], ['stoppedLeading', 'returned']])
    assert.equal(seen[1].detail ?? null, fail ? 'boom' : null)
    assert.equal(await c.leader('once'), null)
  }
  await c.close()
})

test('a work that settles hands over at once', async () => {
  const [ca, cb] = await Promise.all([connect('hand/'), connect('hand/')])
  const a = ca.leaderLoop('hand', 'a', { ttl: 30 })
  const b = cb.leaderLoop('hand', 'b', { ttl: 30 })
  let release
  const released = new Promise((r) => { release = r })
  let aLeads = false
  let bAt = 0
  const seen = []
  b.onNewLeader((l) => seen.push(l))
  try {
    a.start(async () => { aLeads = true; await released })
    await until(() => aLeads, undefined, 'a leads')
    b.start((l, signal) => new Promise((resolve) => {
      bAt = Date.now()
      signal.addEventListener('abort', resolve)
    }))
    await until(() => seen.some((l) => l?.valueString === 'a'), undefined, 'b sees a')
    const t0 = Date.now()
    release()
    await until(() => bAt > 0, undefined, 'b leads')
    assert.ok(bAt - t0 < 5000, `hand-over took ${bAt - t0} ms (TTL 30 s)`)
    assert.equal((await ca.leader('hand'))?.valueString, 'b')
  } finally {
    await a.close()
    await b.close()
    await ca.close()
    await cb.close()
  }
})

test('close() while leading aborts, waits for the work, resigns', async () => {
  const c = await connect('stop/')
  const lp = c.leaderLoop('stop', 'me', { ttl: 30 })
  const log = []
  let leading = false
  lp.onStartedLeading(() => { leading = true })
  lp.start((l, signal) => new Promise((resolve) => {
    signal.addEventListener('abort', async () => {
      await sleep(200) // clean-up: close() waits for it
      log.push(signal.reason.reason)
      resolve()
    })
  }))
  await until(() => leading, undefined, 'leading')
  assert.ok(lp.isLeader && lp.leadership)
  await lp.close()
  assert.deepEqual(log, ['cancelled'])
  assert.ok(lp.isClosed && !lp.isLeader && lp.leadership === null)
  assert.equal(await c.leader('stop'), null)
  assert.throws(() => lp.start(async () => {}), (e) => e.code === 'INVALID_ARGUMENT')
  await c.close()
})

test('closing the client ends the loop with CLOSED', async () => {
  const c = await connect('cc/')
  const lp = c.leaderLoop('cc', 'me', { ttl: 30 })
  let aborted = false
  let leading = false
  lp.onStartedLeading(() => { leading = true })
  lp.start((l, signal) => new Promise((resolve) => signal.addEventListener('abort', () => { aborted = true; resolve() })))
  await until(() => leading, undefined, 'leading')
  await c.close()
  await assert.rejects(within(lp.wait()), (e) => e.code === 'CLOSED')
  assert.ok(aborted)
  assert.equal(await admin.leader('cc/cc'), null)
})

test('latch: awaitLeader, timeout, close, loss and re-campaign', async () => {
  const [ca, cb] = await Promise.all([connect('latch/'), connect('latch/')])
  const a = ca.leaderLatch('latch', 'a', { ttl: 30 })
  const b = cb.leaderLatch('latch', 'b', { ttl: 30 })
  const bEvents = b.events()
  a.start()
  const la = await a.awaitLeader({ timeoutMs: 15000 })
  assert.ok(a.isLeader)
  assert.equal(la.valueString, 'a')
  b.start()
  await assert.rejects(b.awaitLeader({ timeoutMs: 300 }), (e) => e.code === 'LOCK_TIMEOUT')
  await a.close()
  assert.ok(a.isClosed && !a.isLeader)
  const lb = await b.awaitLeader({ timeoutMs: 15000 })
  assert.ok(lb.fencingToken > la.fencingToken)
  await assert.rejects(a.awaitLeader(), (e) => e.code === 'CLOSED')
  const lost = b.lost()
  await sleep(10) // let lost() subscribe (a window, not an assertion)
  await ca.revokeLease(lb.leaseId)
  assert.ok(await within(lost), 'lost() gave null')
  const lb2 = await b.awaitLeader({ timeoutMs: 15000 })
  assert.ok(lb2.fencingToken > lb.fencingToken)
  assert.notEqual(lb2.leaseId, lb.leaseId)
  await b.close()
  const kinds = []
  for await (const e of bEvents) if (e.kind !== 'newLeader') kinds.push([e.kind, e.reason ?? null])
  assert.deepEqual(kinds, [['startedLeading', null], ['stoppedLeading', 'lost'], ['startedLeading', null], ['stoppedLeading', 'cancelled']])
  assert.equal(await ca.leader('latch'), null)
  await ca.close()
  await cb.close()
})

test('bad input', async () => {
  const c = await connect('bad/')
  assert.throws(() => c.leaderLoop('', 'x'), (e) => e.code === 'INVALID_ARGUMENT')
  assert.throws(() => c.leaderLoop('x', 'v', { ttl: 0 }), (e) => e.code === 'INVALID_ARGUMENT')
  assert.throws(() => c.leaderLoop('x', 'v', { stopTimeoutMs: -1 }), (e) => e.code === 'INVALID_ARGUMENT')
  assert.throws(() => c.leaderLatch('a/', 'v'), (e) => e.code === 'INVALID_ARGUMENT')
  assert.throws(() => c.leaderLoop('x', 'v').start(42), (e) => e.code === 'INVALID_ARGUMENT')
  const latch = c.leaderLatch('x', 'v')
  await assert.rejects(latch.awaitLeader({ timeoutMs: 50 }), (e) => e.code === 'LOCK_TIMEOUT')
  await latch.close()
  await c.close()
})
