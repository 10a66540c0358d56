// Mutual TLS and user/password authentication through the Node face, against a real etcd:
// what works, and that every refusal is a coded error that comes at once instead of after
// the connect timeout.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { Client } from 'etcd-recipes'
import { EtcdCluster } from 'etcd-recipes/testing'
import { within, tail } from '../testlib/helpers.mjs'

// Long, so that a refusal that waited for it instead of failing at once is caught by FAST_MS.
const CONNECT_TIMEOUT_MS = 20000
// A refusal must come within this (loose: the machine may be busy).
const FAST_MS = 10000
// Bound on anything that should succeed.
const LIMIT_MS = 30000

const bounded = (what, p) => within(p, LIMIT_MS, what)
const short = (e) => `${e?.code ?? e?.name}: ${tail(e?.message, 300)}`

let tlsEtcd
let authEtcd

before(async () => {
  tlsEtcd = await bounded('start etcd with TLS', EtcdCluster.start({ members: 1, tls: true }))
  authEtcd = await bounded('start etcd with auth', EtcdCluster.start({ members: 1, auth: true }))
})

after(async () => {
  await tlsEtcd?.close()
  await authEtcd?.close()
})

/** PEM contents of one of the TLS cluster's test files: `pem('clientCert')`. */
function pem (name) {
  return readFileSync(tlsEtcd.certs[name])
}

/** Connecting with `options` rejects with `code`, well before the connect timeout. */
async function refused (what, code, options) {
  const started = Date.now()
  let client
  try {
    client = await bounded(what, Client.connect({ connectTimeoutMs: CONNECT_TIMEOUT_MS, ...options }))
  } catch (e) {
    const took = Date.now() - started
    assert.equal(e.code, code, `${what}: expected ${code} after ${took} ms, got ${short(e)}`)
    assert.ok(took < FAST_MS, `${what}: refused only after ${took} ms (connect timeout ${CONNECT_TIMEOUT_MS} ms): ${short(e)}`)
    return e
  }
  await client.close()
  assert.fail(`${what}: connected, expected ${code}`)
}

async function putGetAndLock (client, tag) {
  const rev = await bounded('put', client.put(`${tag}/k`, 'v'))
  assert.ok(rev > 0)
  assert.equal(await bounded('get', client.getString(`${tag}/k`)), 'v')
  const guard = await bounded('acquire', client.lock(`${tag}/lock`, { ttl: 10 }).acquire({ timeoutMs: 10000 }))
  assert.equal(guard.isHeld, true)
  await bounded('release', guard.release())
  const again = await bounded('tryAcquire', client.lock(`${tag}/lock`, { ttl: 10 }).tryAcquire())
  await bounded('release', again.release())
}

test('mTLS: put, get and a lock cycle', async () => {
  assert.ok(tlsEtcd.endpoints.every((e) => e.startsWith('https://')), String(tlsEtcd.endpoints))
  const client = await bounded('connect', Client.connect({
    endpoints: tlsEtcd.endpoints,
    connectTimeoutMs: CONNECT_TIMEOUT_MS,
    caCert: pem('ca'),
    cert: pem('clientCert'),
    key: readFileSync(tlsEtcd.certs.clientKey, 'utf8'), // a string works as well as bytes
  }))
  try {
    await putGetAndLock(client, 'mtls')
  } finally {
    await client.close()
  }
})

test('mTLS: a server cert from an untrusted CA is a fast CONNECT', async () => {
  const e = await refused('server cert not signed by the trusted CA', 'CONNECT', {
    endpoints: tlsEtcd.endpoints, caCert: pem('otherCa'), cert: pem('clientCert'), key: pem('clientKey'),
  })
  assert.match(e.message, /certificate/, short(e))
})

test('mTLS: a client cert from another CA is a fast CONNECT', async () => {
  await refused('client cert from another CA', 'CONNECT', {
    endpoints: tlsEtcd.endpoints, caCert: pem('ca'), cert: pem('otherClientCert'), key: pem('otherClientKey'),
  })
})

test('mTLS: an expired client cert is a fast CONNECT', async () => {
  await refused('expired client cert', 'CONNECT', {
    endpoints: tlsEtcd.endpoints, caCert: pem('ca'), cert: pem('expiredClientCert'), key: pem('expiredClientKey'),
  })
})

test('mTLS: no client cert is a fast CONNECT', async () => {
  await refused('no client cert', 'CONNECT', { endpoints: tlsEtcd.endpoints, caCert: pem('ca') })
})

test('https endpoints without TLS options are INVALID_ARGUMENT', async () => {
  await refused('https without a CA', 'INVALID_ARGUMENT', { endpoints: tlsEtcd.endpoints })
})

test('auth: wrong password, unknown user and no user are fast PERMISSION_DENIED', async () => {
  assert.equal(typeof authEtcd.user, 'string')
  await refused('wrong password', 'PERMISSION_DENIED', {
    endpoints: authEtcd.endpoints, user: authEtcd.user, password: 'not-the-password',
  })
  await refused('unknown user', 'PERMISSION_DENIED', { endpoints: authEtcd.endpoints, user: 'nobody', password: 'x' })
  await refused('no user', 'PERMISSION_DENIED', { endpoints: authEtcd.endpoints })
})

test('auth: a user without permission is denied a put and a lock', async () => {
  await bounded('addUser', authEtcd.addUser('node-reader', 'reader-pw'))
  const client = await bounded('connect', Client.connect({
    endpoints: authEtcd.endpoints, user: 'node-reader', password: 'reader-pw', connectTimeoutMs: CONNECT_TIMEOUT_MS,
  }))
  try {
    await assert.rejects(bounded('put', client.put('k', 'v')), (e) => {
      assert.equal(e.code, 'PERMISSION_DENIED', short(e))
      return true
    })
    await assert.rejects(bounded('get', client.get('k')), { code: 'PERMISSION_DENIED' })
    const started = Date.now()
    await assert.rejects(bounded('acquire', client.lock('denied', { ttl: 10 }).acquire({ timeoutMs: 15000 })), (e) => {
      assert.equal(e.code, 'PERMISSION_DENIED', short(e))
      return true
    })
    const took = Date.now() - started
    assert.ok(took < FAST_MS, `lock refused only after ${took} ms`)
  } finally {
    await client.close()
  }
})

test('auth: the right user and password work', async () => {
  const client = await bounded('connect', Client.connect({
    endpoints: authEtcd.endpoints, user: authEtcd.user, password: authEtcd.password, connectTimeoutMs: CONNECT_TIMEOUT_MS,
  }))
  try {
    await putGetAndLock(client, 'auth')
  } finally {
    await client.close()
  }
  assert.ok((await bounded('compact', authEtcd.compact())) > 0)
})

test('a cluster without tls or auth has no certs, user or password', async () => {
  assert.ok(tlsEtcd.user == null && tlsEtcd.password == null, 'a TLS-only cluster has no user')
  assert.ok(authEtcd.certs == null, 'an auth-only cluster has no certificates')
})
