// Metrics, health and the inspector from Node, against a real etcd: the waiters gauge and
// wait/hold histograms after real contention, the Prometheus text, client.health() for a
// readiness probe, and the `etcd-recipes` CLI showing locks and leaders held from Node.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import path from 'node:path'
import { randomUUID } from 'node:crypto'
import { Client, metricsSnapshot, metricsText } from 'etcd-recipes'
import { EtcdCluster } from 'etcd-recipes/testing'
import { within, until, pkgDir, tail } from '../testlib/helpers.mjs'

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

const sample = (name, label = undefined) => {
  const f = metricsSnapshot().find((x) => x.name === name)
  assert.ok(f, `no metric family ${name}`)
  return f.samples.find((s) => s.labelValue === label)
}
const value = (name, label) => sample(name, label)?.value ?? 0
const count = (name, label) => sample(name, label)?.count ?? 0
const keysUnder = async (prefix) => {
  const view = await client.config(prefix, { prefix: true, reconcileIntervalMs: 0 })
  const keys = view.keys()
  view.close()
  return keys
}

test('metrics: two waiters in the gauge, every wait and hold timed, the text format', async () => {
  const name = `report-${randomUUID().slice(0, 8)}`
  const lock = client.lock(name, { ttl: 10 })
  const holder = await lock.acquire()
  assert.equal(count('etcd_recipes_lock_wait_seconds', name), 1)
  const waiters = [lock.acquire(), lock.acquire()]
  await until(async () => (await keysUnder(`${name}/`)).length === 3, undefined, 'two waiters queued')
  assert.equal(value('etcd_recipes_lock_waiters', name), 2)
  await holder.release()
  const first = await within(Promise.race(waiters))
  await first.release()
  const both = await within(Promise.all(waiters))
  await both.find((g) => g.isHeld).release()
  assert.equal(count('etcd_recipes_lock_wait_seconds', name), 3)
  assert.equal(count('etcd_recipes_lock_hold_seconds', name), 3)
  assert.equal(value('etcd_recipes_lock_waiters', name), 0)
  const s = sample('etcd_recipes_lock_wait_seconds', name)
  assert.deepEqual(s.buckets.at(-1), [300, 3])
  assert.ok(s.sum > 0)
  const kinds = Object.fromEntries(metricsSnapshot().map((f) => [f.name, f.kind]))
  assert.equal(kinds.etcd_recipes_lock_wait_seconds, 'histogram')
  assert.equal(kinds.etcd_recipes_session_losses_total, 'counter')
  const text = metricsText()
  assert.ok(text.includes(`etcd_recipes_lock_wait_seconds_count{name="${name}"} 3`), 'text format lacks the wait count')
  assert.ok(text.includes('# TYPE etcd_recipes_lock_waiters gauge'))
})

test('health: sessions, views and registrations for a readiness probe', async () => {
  const c = await Client.connect({ endpoints: etcd.endpoints, namespace: `h-${randomUUID().slice(0, 8)}/` })
  let h = c.health()
  assert.equal(h.healthy, true)
  assert.deepEqual(h.problems, [])
  assert.equal(h.oldestRenew, undefined)
  const session = await c.session({ ttl: 5 })
  await c.put('cfg/a', '1')
  const view = await c.config('cfg/', { prefix: true })
  const reg = await c.register({ service: 'api', id: 'api-1', addr: '10.0.0.1:80', ttl: 5 })
  h = c.health()
  assert.equal(h.healthy, true, h.problems.join('; '))
  assert.deepEqual([h.sessionsAlive, h.sessionsLost, h.viewsCurrent, h.viewsBehind], [2, 0, 1, 0])
  assert.deepEqual(h.views.map((v) => [v.kind, v.key.endsWith('cfg/'), v.current]), [['config', true, true]])
  assert.deepEqual(h.components.map((x) => [x.kind, x.name, x.ok]), [['registration', 'api/api-1', true]])
  assert.ok(Date.now() - h.oldestRenew < 5000, `oldest renew ${Date.now() - h.oldestRenew} ms ago`)
  assert.deepEqual(new Set(h.sessions.map((s) => s.leaseId)), new Set([session.leaseId, reg.leaseId]))

  await c.revokeLease(session.leaseId)
  assert.notEqual(await within(session.lost()), null)
  h = c.health()
  assert.equal(h.healthy, false)
  assert.equal(h.sessionsLost, 1)
  assert.ok(h.problems.some((p) => p.includes(`session ${session.leaseIdHex} lost`)), h.problems.join('; '))
  await session.close()
  assert.equal(c.health().healthy, true)
  await reg.close()
  view.close()
  await c.close()
  assert.equal(c.health().healthy, false)
  assert.equal(c.health().open, false)
})

// The CLI (test.sh builds it: `cargo build -p etcd-recipes-cli`), or $ETCD_RECIPES_CLI.
const CLI = process.env.ETCD_RECIPES_CLI ||
  path.join(process.env.CARGO_TARGET_DIR || path.join(pkgDir, '..', 'target'), 'debug', 'etcd-recipes')

const cli = (ns, ...args) => new Promise((resolve, reject) => {
  execFile(CLI, ['--namespace', ns, ...args], { env: { ...process.env, ETCD_ENDPOINTS: etcd.endpoints.join(',') } },
    (err, stdout, stderr) => err ? reject(new Error(`etcd-recipes ${args.join(' ')}: ${err.message} ${tail(stderr)}`)) : resolve(stdout))
})

test('inspector: the CLI shows locks and leaders held from Node', { skip: existsSync(CLI) ? false : `CLI not built at ${CLI}` }, async () => {
  const ns = `cli-${randomUUID().slice(0, 8)}/`
  const c = await Client.connect({ endpoints: etcd.endpoints, namespace: ns })
  const guard = await c.lock('jobs/node', { ttl: 10 }).acquire()
  const waiting = c.lock('jobs/node', { ttl: 7 }).acquire()
  await until(async () => JSON.parse(await cli(ns, '--json', 'locks', 'jobs/node')).waiters.length === 1, undefined, 'a waiter queued')
  const leadership = await c.election('sched-node', { ttl: 10 }).campaign('node-1')

  const lock = JSON.parse(await cli(ns, '--json', 'locks', 'jobs/node'))
  // lease_id is a 64-bit integer (JSON.parse rounds it): compare lease_hex.
  assert.equal(lock.holders[0].lease_hex, guard.leaseId.toString(16))
  assert.equal(lock.holders[0].create_revision, guard.fencingToken)
  assert.deepEqual(lock.waiters.map((w) => w.granted_ttl), [7])
  const elections = JSON.parse(await cli(ns, '--json', 'elections'))
  assert.deepEqual(elections.map((e) => [e.name, e.leader.value, e.leader.create_revision]),
    [['sched-node', 'node-1', leadership.fencingToken]])
  const rows = (await cli(ns, 'locks')).trim().split('\n').map((l) => l.split(/\s+/))
  assert.deepEqual(rows[0].slice(0, 3), ['LOCK', 'KIND', 'ROLE'])
  assert.deepEqual(rows[1].slice(0, 5), ['jobs/node', 'lock', 'holder', guard.leaseId.toString(16), String(guard.fencingToken)])
  assert.deepEqual(rows[2].slice(0, 4), ['jobs/node', 'lock', 'waiter', '1'])

  await guard.release()
  await (await within(waiting)).release()
  await leadership.resign()
  await until(async () => JSON.parse(await cli(ns, '--json', 'locks')).length === 0, undefined, 'no lock listed after release')
  await c.close()
})
