// Client, Session, errors and the test helper, against a real etcd.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Client } from 'etcd-recipes'
import { EtcdCluster } from 'etcd-recipes/testing'
import { existsSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { within, until } from '../testlib/helpers.mjs'

let etcd
let client

before(async () => {
  etcd = await EtcdCluster.start({ members: 1 })
  client = await Client.connect({ endpoints: etcd.endpoints, namespace: 'foundation/' })
})

after(async () => {
  await client?.close()
  await etcd?.close()
})

test('client: endpoints, namespace, isClosed', async () => {
  assert.deepEqual(client.endpoints, etcd.endpoints)
  assert.equal(client.namespace, 'foundation/')
  assert.equal(client.isClosed, false)
})

test('put, get, getString, delete with a namespace', async () => {
  const rev = await client.put('k', 'v1')
  assert.equal(typeof rev, 'number')
  assert.ok(rev > 0)
  assert.deepEqual(await client.get('k'), Buffer.from('v1'))
  await client.put('bin', Buffer.from([0, 255, 1]))
  assert.deepEqual(await client.get('bin'), Buffer.from([0, 255, 1]))
  assert.equal(await client.getString('k'), 'v1')
  await assert.rejects(client.getString('bin'), { code: 'DECODE' })
  assert.equal(await client.get('missing'), null)
  const raw = await Client.connect({ endpoints: etcd.endpoints })
  assert.equal(await raw.getString('foundation/k'), 'v1', 'namespace is a key prefix')
  await raw.close()
  assert.equal(await client.delete('k'), 1)
  assert.equal(await client.delete('k'), 0)
  assert.ok((await client.revision()) >= rev)
})

test('a session with TTL 2 stays alive across renewals; close() revokes its lease', async () => {
  const s = await client.session({ ttl: 2 })
  assert.equal(s.ttl, 2)
  assert.equal(typeof s.leaseId, 'bigint')
  assert.equal(s.leaseIdHex, s.leaseId.toString(16))
  let lostEarly = null
  s.onLost((r) => { lostEarly = r })
  // The property is "alive for a while": 5 s (2.5 TTLs) is the window it must hold over, so
  // renewals must have happened in it. Not a wait for an event.
  await new Promise((r) => setTimeout(r, 5000))
  assert.equal(lostEarly, null, `lost during the window: ${lostEarly}`)
  assert.equal(s.isAlive, true)
  assert.equal(s.state, 'alive')
  assert.equal(await client.leaseExists(s.leaseId), true)
  await s.close()
  assert.equal(s.state, 'closed')
  assert.equal(await client.leaseExists(s.leaseId), false)
  assert.equal(await s.lost(), null, 'closed is a normal end, not a loss')
  await s.close() // idempotent
})

test('a session reports lost within its TTL while etcd is frozen (SIGSTOP)', async () => {
  const c = await Client.connect({ endpoints: etcd.endpoints, requestTimeoutMs: 1000 })
  const s = await c.session({ ttl: 3 })
  let called = null
  s.onLost((reason) => { called = reason })
  const ttlMs = s.ttl * 1000
  const t0 = Date.now()
  etcd.pause(0)
  try {
    const reason = await within(s.lost(), 20000, 'session.lost() while etcd is frozen')
    const ms = Date.now() - t0
    // The promise: the session gives up before its deadline, i.e. by (last confirmed
    // renewal, sent before t0) + TTL - margin <= t0 + TTL. What is measured here also
    // includes handing the result to JS, so a loaded machine gets 1 s on top; a session
    // that waited for request timeouts or TCP to notice would take far longer.
    assert.ok(ms <= ttlMs + 1000, `lost after ${ms} ms (TTL ${ttlMs} ms)`)
    assert.match(reason, /renewal/)
    assert.equal(s.isAlive, false)
    assert.equal(s.state, 'lost')
  } finally {
    etcd.resume(0)
  }
  await until(() => called !== null, 10000, 'the onLost callback')
  assert.match(called, /renewal/)
  await c.close()
})

test('revoking the lease from outside makes the session lost', async () => {
  const s = await client.session({ ttl: 10 })
  await client.revokeLease(s.leaseId)
  const reason = await within(s.lost(), 15000, 'lost after revoke')
  assert.match(reason, /revoked|expired/)
})

test('bad input: TypeError with code INVALID_ARGUMENT, fast', async () => {
  const bad = [
    () => client.session({ ttl: 0 }),
    () => client.session({ ttl: 1.5 }),
    () => client.session({ ttl: 9_000_000_001 }),
    () => client.session({ ttl: 'ten' }),
    () => client.put(5, 'x'),
    () => client.put('k', 5),
    () => client.put('', 'x'),
    () => Client.connect({ endpoints: [] }),
    () => Client.connect({ endpoints: ['http://'] }),
    () => Client.connect({ endpoints: ['localhost'] }),
    () => Client.connect({ endpoints: 'localhost:2379' }),
    () => Client.connect(),
    () => Client.connect({ endpoints: etcd.endpoints, connectTimeoutMs: -1 }),
    () => client.revokeLease('not-a-number'),
    () => client.session('ttl=10'),
    () => client.session(10),
    () => client.config('k', 'prefix'),
    () => client.lock('x', 'ttl=10'),
    () => client.lock('x', { ttl: '10' }),
    () => client.lock('x').acquire(5),
    () => client.lock('x', { timeoutMs: -1 }),
    () => client.election('e', 7),
    () => client.election('e').campaign('v', 'soon'),
    () => client.register({ service: 's', id: 'i', addr: 'h:1', metadata: { n: 10n } }),
    () => client.register({ service: 's', id: 'i', addr: 'h:1', metadata: [{ deep: [1n] }] }),
  ]
  for (const f of bad) {
    await assert.rejects(async () => f(), (e) => {
      assert.ok(e instanceof TypeError, `${f}: ${e?.constructor?.name} ${e?.message}`)
      assert.equal(e.code, 'INVALID_ARGUMENT', String(f))
      assert.ok(e.message.length > 10)
      return true
    })
  }
})

test('an unreachable endpoint fails with CONNECT within the connect timeout', async () => {
  const t0 = Date.now()
  await assert.rejects(within(Client.connect({ endpoints: ['127.0.0.1:1'], connectTimeoutMs: 1000 }), 15000, 'connect'), (e) => {
    assert.ok(e instanceof Error)
    assert.equal(e.code, 'CONNECT', e.message)
    assert.match(e.message, /127\.0\.0\.1:1/)
    return true
  })
  // Bounded by the 1 s connect timeout (plus slack for a loaded machine), not the 5 s default.
  const ms = Date.now() - t0
  assert.ok(ms < 4500, `CONNECT after ${ms} ms`)
})

test('a closed client rejects with CLOSED and closes its sessions', async () => {
  const c = await Client.connect({ endpoints: etcd.endpoints })
  const s = await c.session({ ttl: 5 })
  const lost = s.lost()
  assert.equal(c.isClosed, false)
  await c.close()
  assert.equal(c.isClosed, true)
  assert.equal(await within(lost, 15000, 'lost after client.close()'), null)
  assert.equal(await client.leaseExists(s.leaseId), false)
  await assert.rejects(c.get('x'), { code: 'CLOSED' })
  await c.close()
})

test('Symbol.asyncDispose (await using) closes sessions and clients', async () => {
  // Node 20 cannot parse `await using` itself; TypeScript compiles it to exactly this call.
  const c = await Client.connect({ endpoints: etcd.endpoints })
  const s = await c.session({ ttl: 5 })
  assert.equal(typeof s[Symbol.asyncDispose], 'function')
  assert.equal(await client.leaseExists(s.leaseId), true)
  await s[Symbol.asyncDispose]()
  assert.equal(await client.leaseExists(s.leaseId), false)
  const s2 = await c.session({ ttl: 5 })
  await c[Symbol.asyncDispose]()
  assert.equal(c.isClosed, true)
  assert.equal(await client.leaseExists(s2.leaseId), false)
})

test('test helper: endpoints, endpoint(i), dir, etcdctl, etcdctlPath, pause/resume', async () => {
  assert.match(etcd.endpoints[0], /^http:\/\/127\.0\.0\.1:\d+$/)
  assert.equal(etcd.endpoint(0), etcd.endpoints[0])
  assert.throws(() => etcd.endpoint(3), { code: 'INVALID_ARGUMENT' })
  assert.ok(existsSync(etcd.dir), etcd.dir)
  assert.match(etcd.etcdctlPath, /etcdctl$/)
  assert.deepEqual(etcd.etcdctl, [etcd.etcdctlPath, `--endpoints=${etcd.endpoints.join(',')}`])
  await client.put('via-etcdctl', 'seen')
  const ctl = execFileSync(etcd.etcdctl[0], [...etcd.etcdctl.slice(1), 'get', '--print-value-only', 'foundation/via-etcdctl'], { env: { ...process.env, ETCDCTL_API: '3' }, encoding: 'utf8' })
  assert.equal(ctl.trim(), 'seen')
  assert.equal(typeof etcd.pid(0), 'number')
  etcd.pause(0)
  etcd.resume(0)
  assert.equal(await client.put('after-resume', 'x') > 0, true)
  assert.throws(() => etcd.pause(7), { code: 'INVALID_ARGUMENT' })
})

test('test helper: stopMember(i) / startMember(i), stop() stops every member', async () => {
  const c = await EtcdCluster.start()
  try {
    await c.stopMember(0)
    assert.equal(c.pid(0), null)
    await c.startMember(0)
    assert.equal(typeof c.pid(0), 'number')
    await c.stop()
    assert.equal(c.pid(0), null)
  } finally {
    await c.close()
  }
})
