// The process exits by itself: after client.close(), with things left open, from require
// and from import. Each case runs in a child process.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { EtcdCluster } from 'etcd-recipes/testing'
import { runNode } from '../testlib/helpers.mjs'

let etcd
before(async () => { etcd = await EtcdCluster.start() })
after(async () => { await etcd?.close() })

const eps = () => JSON.stringify(etcd.endpoints)

test('CommonJS require works and exits by itself after client.close()', async () => {
  const r = await runNode(`
    const { Client, Session } = require('etcd-recipes')
    ;(async () => {
      const client = await Client.connect({ endpoints: ${eps()} })
      const s = await client.session({ ttl: 5 })
      s.onLost(() => console.log('lost-callback'))
      s.lost().then((r) => console.log('lost:', r))
      console.log(s instanceof Session ? 'session-ok' : 'bad')
      await client.close()
    })()`, { type: 'commonjs' })
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /session-ok/)
  assert.match(r.stdout, /lost: session closed/)
  assert.ok(r.ms < 10000)
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
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /lost: session closed/)
})

test('exiting with a client and session still open exits cleanly (no hang, no crash)', async () => {
  const r = await runNode(`
    import { Client } from 'etcd-recipes'
    const client = await Client.connect({ endpoints: ${eps()} })
    const s = await client.session({ ttl: 5 })
    s.onLost(() => {})
    await client.put('left-open', 'yes')
    console.log('done')`)
  assert.equal(r.code, 0, r.stderr)
  assert.equal(r.signal, null)
  assert.match(r.stdout, /done/)
  assert.ok(r.ms < 10000, `took ${r.ms} ms`)
})

test('process.exit() with a pending request and an open session never crashes', async () => {
  const r = await runNode(`
    import { Client } from 'etcd-recipes'
    const client = await Client.connect({ endpoints: ${eps()} })
    await client.session({ ttl: 5 })
    client.session({ ttl: 5 })
    client.put('x', 'y')
    process.exit(7)`)
  assert.equal(r.code, 7, r.stderr)
  assert.equal(r.signal, null)
})

test('ETCD_RECIPES_LOG switches core tracing output on (stderr)', async () => {
  const src = `
    const { Client } = require('etcd-recipes')
    Client.connect({ endpoints: ${eps()} }).then((c) => c.close())`
  const on = await runNode(src, { type: 'commonjs', env: { ETCD_RECIPES_LOG: 'debug' } })
  assert.equal(on.code, 0, on.stderr)
  assert.match(on.stderr, /connected to etcd/)
  const off = await runNode(src, { type: 'commonjs', env: { ETCD_RECIPES_LOG: '' } })
  assert.equal(off.code, 0)
  assert.doesNotMatch(off.stderr, /connected to etcd/)
})

test('with every recipe open, client.close() ends iterators and the process exits by itself', async () => {
  const r = await runNode(`
    import { Client } from 'etcd-recipes'
    const client = await Client.connect({ endpoints: ${eps()}, namespace: 'exit-all/' })
    const guard = await client.lock('l').acquire()
    guard.onLost((r) => console.log('guard lost:', r))
    const leadership = await client.election('e').campaign('me')
    const reg = await client.register({ service: 's', id: 'i', addr: 'h:1' })
    reg.onStateChange((s) => console.log('registration:', s.state))
    const view = await client.discover('s')
    const cfg = await client.config('c/', { prefix: true })
    const observing = (async () => { for await (const l of client.election('e').observe()) console.log('leader:', l?.value) ; console.log('observe ended') })()
    const changes = (async () => { for await (const c of cfg.changes()) {} ; console.log('changes ended') })()
    const sets = (async () => { for await (const s of view) {} ; console.log('sets ended') })()
    await new Promise((r) => setTimeout(r, 300))
    await client.close()
    await Promise.all([observing, changes, sets])
    console.log('held:', guard.isHeld, 'leader:', leadership.isLeader)`, { timeoutMs: 20000 })
  assert.equal(r.code, 0, r.stderr)
  for (const line of ['leader: me', 'observe ended', 'changes ended', 'sets ended', 'held: false leader: false', 'registration: closed']) {
    assert.ok(r.stdout.includes(line), `missing ${JSON.stringify(line)} in:\n${r.stdout}`)
  }
  assert.ok(r.ms < 10000, `took ${r.ms} ms`)
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
  assert.equal(r.code, 0, r.stderr)
  assert.equal(r.signal, null)
  assert.match(r.stdout, /bye/)
})
