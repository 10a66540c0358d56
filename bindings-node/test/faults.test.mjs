// A client on several endpoints keeps working when one member is dead or hung: the same
// core behaviour as core/tests/faults.rs, through the Node face. Bounds are loose: they
// tell "moved on" from "waited for the 10 s request timeout".
import { test } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { execFileSync } from 'node:child_process'
import { Client } from 'etcd-recipes'
import { EtcdCluster } from 'etcd-recipes/testing'

const MOVED_ON_MS = 4000

async function refusedEndpoint () {
  const srv = net.createServer()
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve))
  const port = srv.address().port
  await new Promise((resolve) => srv.close(resolve))
  return `127.0.0.1:${port}`
}

test('connect succeeds when any endpoint serves', async () => {
  const etcd = await EtcdCluster.start({ members: 1 })
  try {
    const dead = await refusedEndpoint()
    for (let i = 0; i < 20; i++) {
      const endpoints = i % 2 === 0 ? [dead, etcd.endpoints[0]] : [etcd.endpoints[0], dead]
      const c = await Client.connect({ endpoints, connectTimeoutMs: 10000 })
      await c.put('k', String(i))
      assert.equal(String(await c.get('k')), String(i))
      await c.close()
    }
    const [a, b] = [await refusedEndpoint(), await refusedEndpoint()]
    const t0 = Date.now()
    await assert.rejects(Client.connect({ endpoints: [a, b], connectTimeoutMs: 1000 }), (e) => {
      assert.equal(e.code, 'CONNECT')
      assert.ok(e.message.includes(a) && e.message.includes(b), e.message.slice(0, 500))
      return true
    })
    assert.ok(Date.now() - t0 < 3000, `gave up after ${Date.now() - t0} ms`)
  } finally {
    await etcd.close()
  }
})

test('requests move off a paused member', async () => {
  const etcd = await EtcdCluster.start({ members: 3 })
  const c = await Client.connect({ endpoints: etcd.endpoints, connectTimeoutMs: 10000 })
  try {
    await c.put('warm', 'up')
    const status = JSON.parse(execFileSync(etcd.etcdctlPath, [`--endpoints=${etcd.endpoints.join(',')}`, 'endpoint', 'status', '-w', 'json'],
      { env: { ...process.env, ETCDCTL_API: '3' }, encoding: 'utf8' }))
    const victim = etcd.endpoints.findIndex((ep) => {
      const st = status.find((s) => s.Endpoint.endsWith(ep.split('//').pop())).Status
      return st.header.member_id !== st.leader
    })
    assert.ok(victim >= 0, 'no follower found')
    etcd.pause(victim)
    const lat = []
    let unknown = 0
    try {
      for (let i = 0; i < 40; i++) {
        const t0 = performance.now()
        try {
          if (i % 2 === 0) await c.put(`k${i % 5}`, String(i))
          else assert.equal(String(await c.get('warm')), 'up')
        } catch (e) {
          if (e.code !== 'UNKNOWN_OUTCOME') throw e
          unknown++ // a write sent to the member as it froze
        }
        lat.push(performance.now() - t0)
      }
    } finally {
      etcd.resume(victim)
    }
    lat.sort((x, y) => x - y)
    console.log(`member ${victim} paused: 40 ops, p50 ${lat[20].toFixed(1)} ms, max ${lat[39].toFixed(1)} ms, ${unknown} unknown`)
    assert.ok(unknown <= 1, `${unknown} writes with an unknown outcome`)
    assert.ok(lat[39] < MOVED_ON_MS, `an op waited ${lat[39].toFixed(0)} ms on the paused member`)
  } finally {
    await c.close()
    await etcd.close()
  }
})
