// The process exits by itself: after client.close(), with things left open, from require
// and from import. Each case runs in a child process.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { EtcdCluster } from 'etcd-recipes/testing'
import { runNode, tail } from '../testlib/helpers.mjs'

let etcd
before(async () => { etcd = await EtcdCluster.start() })
after(async () => { await etcd?.close() })

const eps = () => JSON.stringify(etcd.endpoints)

// How long after the script's last statement the process may take to exit by itself.
// Measured from a timestamp the child prints, so a slow start on a loaded machine does not
// count; a leftover ref'd handle (a timer, a socket) would keep it alive far longer, or for
// ever (runNode kills a hang, and the exit code then fails the test).
const EXIT_MS = 8000
/** A child's result for a failure message: the exit and the tail of both streams. */
const both = (r) => `code ${r.code} signal ${r.signal}\nstdout: ${tail(r.stdout, 1000)}\nstderr: ${tail(r.stderr, 1000)}`
function exitDelay (r, marker) {
  const m = r.stdout.match(new RegExp(`${marker} (\\d+)`))
  assert.ok(m, `no "${marker}" line in: ${tail(r.stdout, 1000)}`)
  return r.exitedAt - Number(m[1])
}

test('CommonJS require works and exits by itself after client.close()', async () => {
  const r = await runNode(`
    const { Client, Session } = require('etcd-recipes')
    ;(async () => {
      const client = await Client.connect({ endpoints: ${eps()} })
      const s = await client.session({ ttl: 5 })
      s.onLost(() => console.log('lost-callback'))
      s.lost().then((r) => console.log('lost:', r))
      console.log(s instanceof Session ? 'session-ok' : 'bad')
      console.log('closing-at', Date.now())
      await client.close()
    })()`, { type: 'commonjs' })
  assert.equal(r.code, 0, both(r))
  assert.match(r.stdout, /session-ok/)
  assert.match(r.stdout, /lost: session closed/)
  const ms = exitDelay(r, 'closing-at')
  assert.ok(ms < EXIT_MS, `exited ${ms} ms after close() was called`)
})

test('ESM import (named and default) works and exits by itself after client.close()', async () => {
  const r = await runNode(`
    import { Client } from 'etcd-recipes'
    import etcdRecipes from 'etcd-recipes'
    import { EtcdCluster } from 'etcd-recipes/testing'
    if (etcdRecipes.Client !== Client || typeof EtcdCluster.start !== 'function') throw new Error('exports differ')
    const client = await Client.connect({ endpoints: ${eps()} })
    const s = await client.session({ ttl: 5 })
    const pending = s.lost() // awaited below: keeps the process alive until the close
    setTimeout(() => client.close(), 300)
    console.log('lost:', await pending)`)
  assert.equal(r.code, 0, both(r))
  assert.match(r.stdout, /lost: session closed/)
})

test('exiting with a client and session still open exits cleanly (no hang, no crash)', async () => {
  const r = await runNode(`
    import { Client } from 'etcd-recipes'
    const client = await Client.connect({ endpoints: ${eps()} })
    const s = await client.session({ ttl: 5 })
    s.onLost(() => {})
    await client.put('left-open', 'yes')
    console.log('done-at', Date.now())`)
  assert.equal(r.code, 0, both(r))
  assert.equal(r.signal, null)
  const ms = exitDelay(r, 'done-at')
  assert.ok(ms < EXIT_MS, `exited ${ms} ms after the script ended`)
})

test('process.exit() with a pending request and an open session never crashes', async () => {
  const r = await runNode(`
    import { Client } from 'etcd-recipes'
    const client = await Client.connect({ endpoints: ${eps()} })
    await client.session({ ttl: 5 })
    client.session({ ttl: 5 })
    client.put('x', 'y')
    process.exit(7)`)
  assert.equal(r.code, 7, both(r))
  assert.equal(r.signal, null)
})

test('ETCD_RECIPES_LOG switches core tracing output on (stderr)', async () => {
  const src = `
    const { Client } = require('etcd-recipes')
    Client.connect({ endpoints: ${eps()} }).then((c) => c.close())`
  const on = await runNode(src, { type: 'commonjs', env: { ETCD_RECIPES_LOG: 'debug' } })
  assert.equal(on.code, 0, both(on))
  assert.match(on.stderr, /connected to etcd/, tail(on.stderr))
  const off = await runNode(src, { type: 'commonjs', env: { ETCD_RECIPES_LOG: '' } })
  assert.equal(off.code, 0, both(off))
  assert.doesNotMatch(off.stderr, /connected to etcd/, tail(off.stderr))
})

test('with every recipe open, client.close() ends iterators and the process exits by itself', async () => {
  const r = await runNode(`
    import { Client } from 'etcd-recipes'
    const client = await Client.connect({ endpoints: ${eps()}, namespace: 'exit-all/' })
    const guard = await client.lock('l').acquire()
    guard.onLost((r) => console.log('guard lost:', r))
    const leadership = await client.election('e').campaign('me')
    const reg = await client.register({ service: 's', id: 'i', addr: 'h:1' })
    // onStateChange does not keep the process alive, so the script waits for the call it
    // reports (below, bounded by a timer).
    const regClosed = new Promise((resolve) => reg.onStateChange((s) => {
      console.log('registration:', s.state)
      if (s.state === 'closed') resolve()
    }))
    const view = await client.discover('s')
    const cfg = await client.config('c/', { prefix: true })
    let sawMe
    const seenMe = new Promise((resolve) => { sawMe = resolve })
    const observing = (async () => {
      for await (const l of client.election('e').observe()) {
        console.log('leader:', l?.value)
        if (l?.value === 'me') sawMe()
      }
      console.log('observe ended')
    })()
    const changes = (async () => { for await (const c of cfg.changes()) {} ; console.log('changes ended') })()
    const sets = (async () => { for await (const s of view) {} ; console.log('sets ended') })()
    await seenMe // the observer reported our leadership
    const closing = Date.now()
    await client.close()
    await Promise.all([observing, changes, sets])
    console.log('close-and-end-ms', Date.now() - closing)
    console.log('held:', guard.isHeld, 'leader:', leadership.isLeader)
    let t
    await Promise.race([regClosed, new Promise((resolve) => { t = setTimeout(resolve, 15000) })])
    clearTimeout(t)
    console.log('done-at', Date.now())`, { timeoutMs: 60000 })
  assert.equal(r.code, 0, both(r))
  for (const line of ['leader: me', 'observe ended', 'changes ended', 'sets ended', 'held: false leader: false', 'registration: closed']) {
    assert.ok(r.stdout.includes(line), `missing ${JSON.stringify(line)} in:\n${tail(r.stdout)}`)
  }
  // close() gives up on stragglers after 5 s; the iterators end as it resolves.
  const closeMs = Number(r.stdout.match(/close-and-end-ms (\d+)/)?.[1])
  assert.ok(closeMs < EXIT_MS, `close() and the iterators' end took ${closeMs} ms`)
  const ms = exitDelay(r, 'done-at')
  assert.ok(ms < EXIT_MS, `exited ${ms} ms after the script ended`)
})

test('recipes left open without any close: the process still exits by itself, cleanly', async () => {
  const r = await runNode(`
    const { Client } = require('etcd-recipes')
    ;(async () => {
      const client = await Client.connect({ endpoints: ${eps()}, namespace: 'left-open/' })
      const guard = await client.lock('l').acquire()
      guard.onLost(() => {})
      await client.register({ service: 's', id: 'i', addr: 'h:1' })
      const cfg = await client.config('c')
      cfg.get()
      console.log('bye')
    })()`, { type: 'commonjs' })
  assert.equal(r.code, 0, both(r))
  assert.equal(r.signal, null)
  assert.match(r.stdout, /bye/)
})
