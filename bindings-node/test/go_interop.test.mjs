// Interop with etcd's own Go concurrency.Election (tests/go/peer, built offline by
// tests/go/build.sh; scripts/setup installs Go and the etcd Go sources): a Go observer sees
// our leader and its proclaimed value; a Go candidate queues behind us and is elected only
// after we resign.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import path from 'node:path'
import { Client } from 'etcd-recipes'
import { EtcdCluster } from 'etcd-recipes/testing'
import { pkgDir, within, until, tail } from '../testlib/helpers.mjs'

let etcd
let client
let peerBin
const peers = []

before(async () => {
  // Fails (does not skip) when Go or the etcd Go sources are missing: scripts/setup installs them.
  try {
    peerBin = execFileSync('bash', [path.join(pkgDir, '..', 'tests/go/build.sh'), 'peer'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim()
  } catch (e) {
    throw new Error(`building tests/go/peer failed: ${tail(e.stderr, 1000)}`)
  }
  etcd = await EtcdCluster.start()
  client = await Client.connect({ endpoints: etcd.endpoints })
})
after(async () => {
  for (const p of peers) if (p.child.exitCode === null) p.child.kill('SIGKILL')
  await client?.close()
  await etcd?.close()
})

/** A running Go peer: `next(event)` resolves its next JSON event, which must be `event`. */
function goPeer (...args) {
  const child = spawn(peerBin, ['--endpoints', etcd.endpoints.join(','), ...args], { stdio: ['pipe', 'pipe', 'ignore'] })
  const queue = []
  const waiters = []
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)))
  createInterface({ input: child.stdout }).on('line', (line) => {
    const w = waiters.shift()
    if (w) w(line); else queue.push(line)
  })
  const peer = {
    child,
    exited,
    async next (event) {
      const line = queue.length ? queue.shift() : await within(new Promise((resolve) => waiters.push(resolve)), 15000, `Go ${args[0]}: ${event}`)
      const ev = JSON.parse(line)
      assert.equal(ev.event, event, `Go ${args[0]}: wanted ${event}, got ${tail(line, 300)}`)
      return ev
    },
    pending: () => queue.length,
    send: (line) => child.stdin.write(`${line}\n`)
  }
  peers.push(peer)
  return peer
}

test('a Go observer sees our leader, then our proclaimed value; a Go candidate follows our resignation', async () => {
  const leadership = await client.election('go-e', { ttl: 10 }).campaign('from-node')
  const obs = goPeer('observe', 'go-e', '--count', '2')
  await obs.next('ready')
  let seen = await obs.next('leader')
  assert.deepEqual([seen.key, seen.value, seen.rev], [leadership.key, 'from-node', leadership.fencingToken])
  assert.equal(seen.key, `go-e/${leadership.leaseId.toString(16)}`) // (lease ids exceed JSON.parse's precision)
  await leadership.proclaim('proclaimed')
  seen = await obs.next('leader')
  assert.deepEqual([seen.key, seen.value], [leadership.key, 'proclaimed'])
  assert.equal(await within(obs.exited, 15000, 'observer exit'), 0)

  // A Go candidate queues behind us (its key appears) and is elected only after we resign.
  const cand = goPeer('elect', 'go-e', 'from-go')
  const queued = await cand.next('session')
  await until(async () => (await client.get(queued.key)) !== null, 15000, `Go key ${queued.key} to appear`)
  assert.equal(cand.pending(), 0, 'Go reported something while queued behind our leader')
  assert.equal(leadership.isLeader, true)
  const before = await client.revision() // we still lead at this revision
  await leadership.resign()
  const elected = await cand.next('elected')
  assert.ok(elected.header_rev > before, `Go elected at ${elected.header_rev}, while we led at ${before}`)
  assert.ok(elected.rev > leadership.fencingToken)
  assert.equal((await client.election('go-e').leader()).valueString, 'from-go')
  cand.send('resign')
  await cand.next('resigned')
  assert.equal(await within(cand.exited, 15000, 'candidate exit'), 0)
})
