// The examples under examples/node run against a real etcd and do what they say.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import path from 'node:path'
import http from 'node:http'
import { Client } from 'etcd-recipes'
import { EtcdCluster } from 'etcd-recipes/testing'
import { pkgDir, until, within, spawnChild, tail } from '../testlib/helpers.mjs'

const dir = path.resolve(pkgDir, '..', 'examples', 'node')
let etcd
let client

before(async () => {
  assert.ok(existsSync(path.join(dir, 'node_modules', 'etcd-recipes')), 'run `npm install` in examples/node (test.sh does)')
  etcd = await EtcdCluster.start()
  client = await Client.connect({ endpoints: etcd.endpoints, namespace: 'examples/' })
})
after(async () => {
  await client?.close()
  await etcd?.close()
})

/** Run a command to its end (SIGKILL after `timeoutMs`: a hang catcher); resolves {code, out}. */
async function runToEnd (cmd, args, { timeoutMs = 120000, ...options } = {}) {
  const c = spawnChild(cmd, args, { timeoutMs, ...options })
  const { code } = await c.exited
  return { code, out: c.out() }
}

function run (file) {
  return runToEnd(process.execPath, [file], { cwd: dir, env: { ...process.env, ETCD_ENDPOINTS: etcd.endpoints.join(',') } })
}

const cases = {
  'picking.mjs': [/round robin: pay-1, pay-2, pay-3, pay-1, pay-2, pay-3/, /weighted: pay-2 \(weight 3\) got the most picks: true/, /zone b first: pay-3$/m, /sticky: pay-1$/m, /pay-1 after 2 errors: down=true, picks pay-2, pay-3/, /pay-1 is back after its down period/, /a pick filtered to zone a: pay-\d/, /pay-2 draining: listed 3, available pay-1, pay-3/, /session closed: pay has 0 instances; pay-1 is closed/],
  'registry.mjs': [/instances now: billing-1, billing-2, billing-3/, /healed itself with a new lease/, /discovery: down billing-3/],
  'config.mjs': [/connection: CONNECTED/, /greeting = hello/, /feature-x validated = \{"enabled":false,"rollout":0\}/, /timeout = 2500/,
    /refused: DECODE app\/feature-y: rollout must be 0..100/, /app\/greeting bonjour -> \(deleted\)/,
    /snapshot at revision \d+: app\/feature-x, app\/feature-y/, /1M local JSON reads/],
  'leader.mjs': [/node-\d leads \(fencing token \d+\)/, /revoking the leader's lease/, /the other loop leads now/, /work stopped \(lost\)/, /last tick: node-\d tick \d+/],
  'semaphore.mjs': [/6 downloads done, at most [12] at a time/, /both permits taken: LOCK_TIMEOUT/],
  'rwlock.mjs': [/two readers hold the lock together/, /a writer has to wait: LOCK_TIMEOUT/, /the writer updated the catalog \(fencing token \d+\)/, /a reader sees version 2/],
  'barrier.mjs': [/gate held: true/, /a wait with a short timeout gives up: LOCK_TIMEOUT/, /still waiting at the gate: 3/, /worker-3 passes the gate/, /gate held now: false/, /all 3 entered; they started within \d+ ms/, /a fourth party is turned away, the barrier is full: LOCK_TIMEOUT/, /all 3 left together: done/],
  'queue.mjs': [/enqueued 6 jobs; length: 6/, /consumer-\d took job-1/, /each job went to exactly one consumer: 6 taken, 6 distinct, length now 0/, /a waiting consumer woke up with job-7/, /dequeue on an empty queue gives up: LOCK_TIMEOUT/, /dequeued in order: page on-call, patch openssl, rotate logs, resize images, weekly digest/],
  'lock.mjs': [/report ran 8 times \(expected 8/, /tryAcquire while held: LOCK_TIMEOUT/],
  'workqueue.mjs': [/worker-\d made a thumbnail of later\.png \(attempt 1\)/, /worker-\d failed on poison\.png \(attempt 2\)/, /dead letters: poison\.png x2/, /requeued: 1/, /poison\.png is back \(attempt 1\)/, /visible items left: 0/],
  'counter.mjs': [/visits: 100/, /reset from 100: true/, /reset from 100 again: false/, /after 5 more: 5/],
  'health-server.mjs': [/GET \/healthz -> 200/, /GET \/readyz -> 200 \{"ready":true,"sessionsAlive":2,"viewsCurrent":1,"problems":\[\]\}/, /GET \/metrics -> 200, 13 metric families/, /GET \/metrics.json -> 200, families: etcd_recipes_lock_wait_seconds, /, /after the lease was revoked: GET \/readyz -> 503 \["session [0-9a-f]+ lost: /, /metrics: etcd_recipes_session_losses_total 1/, /done/],
  'election.mjs': [/lost leadership: leader key deleted|lost leadership: .*(revoked|lost)/, /resigns/, /observer: leader is node-\d/],
}

for (const [file, expect] of Object.entries(cases)) {
  test(`example ${file}`, async () => {
    const r = await run(file)
    assert.equal(r.code, 0, tail(r.out))
    for (const re of expect) assert.match(r.out, re, tail(r.out))
  })
}

function getJson (url) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: 10000 }, (res) => {
      let body = ''
      res.on('data', (d) => { body += d })
      res.on('end', () => resolve(JSON.parse(body)))
    })
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url} within 10 s`)))
    req.on('error', reject)
  })
}

test('example http-server.mjs: registers and leads at startup; SIGTERM resigns and deregisters', async () => {
  const server = spawnChild(process.execPath, ['http-server.mjs'], {
    cwd: dir, env: { ...process.env, ETCD_ENDPOINTS: etcd.endpoints.join(','), INSTANCE_ID: 'web-test' }, stdio: ['ignore', 'pipe', 'pipe', 'ipc'], timeoutMs: 120000,
  })
  const { child, out } = server
  try {
    const addr = await within(new Promise((resolve, reject) => {
      child.on('message', (m) => m.ready && resolve(m.ready))
      server.exited.then(({ code, signal }) => reject(new Error(`exited before ready (${code ?? signal}): ${tail(out())}`)))
    }), 30000, () => `the ready message: ${tail(out())}`)
    const view = await client.discover('web')
    await until(() => view.instances().some((i) => i.id === 'web-test' && i.addr === addr), 15000,
      () => `registered (discovery has ${view.instances().map((i) => `${i.id}@${i.addr}`).join(', ')})`)
    await until(async () => (await getJson(`http://${addr}/`)).leader === true, 20000, () => `leader: ${tail(out(), 500)}`)
    assert.equal((await client.leader('web-leader')).valueString, 'web-test')
    await until(async () => (await client.getString('web/last-job'))?.startsWith('web-test'), 15000, () => `leader job ran: ${tail(out(), 500)}`)
    child.kill('SIGTERM')
    const { code, signal } = await within(server.exited, 30000, () => `exit after SIGTERM: ${tail(out())}`)
    assert.equal(code, 0, tail(out()))
    assert.equal(signal, null)
    assert.match(out(), /resigned and deregistered/, tail(out()))
    assert.equal(await client.election('web-leader').leader(), null, 'resigned')
    assert.equal(await client.get('web/web-test'), null, 'deregistered')
    await until(() => view.instances().length === 0, 15000, 'discovery dropped it')
    view.close()
  } finally {
    child.kill('SIGKILL') // no-op once it exited
  }
})

test('the TypeScript example compiles under --strict (await using downlevelled) and runs', async () => {
  const tsc = path.join(pkgDir, 'node_modules', '.bin', 'tsc')
  const compiled = await runToEnd(tsc, ['-p', 'tsconfig.json', '--noEmit', 'false', '--outDir', 'tsbuild'], { cwd: pkgDir, timeoutMs: 180000 })
  assert.equal(compiled.code, 0, tail(compiled.out))
  const r = await runToEnd(process.execPath, [path.join(pkgDir, 'tsbuild', 'typed.mjs')], { cwd: pkgDir })
  assert.equal(r.code, 0, tail(r.out))
  for (const re of [/fencing token \d+/, /observed node-1 \(ready\)/, /now b-1/, /registration closed/, /ended: session closed/, /typed error ok/]) assert.match(r.out, re, tail(r.out))
})

test('the usage block in bindings-node/README.md works when pasted', async () => {
  const { readFileSync, writeFileSync, rmSync } = await import('node:fs')
  const readme = readFileSync(path.join(pkgDir, 'README.md'), 'utf8')
  const block = readme.match(/```js\n(\/\/ usage\.mjs[\s\S]*?)```/)[1]
  const file = path.join(pkgDir, 'tsbuild', 'usage.mjs')
  const { mkdirSync } = await import('node:fs')
  mkdirSync(path.dirname(file), { recursive: true })
  writeFileSync(file, block)
  try {
    const r = await runToEnd(process.execPath, [file], { cwd: pkgDir, env: { ...process.env, ETCD_ENDPOINTS: etcd.endpoints.join(',') } })
    assert.equal(r.code, 0, tail(r.out))
    assert.match(r.out, /leader: node-1 true/, tail(r.out))
    assert.match(r.out, /billing: \[ '10\.0\.0\.5:8080' \] b-1/, tail(r.out))
    assert.match(r.out, /feature enabled: true/, tail(r.out))
  } finally {
    rmSync(file, { force: true })
  }
})

test('the top-level README shows the same, tested, Node usage block', async () => {
  const { readFileSync } = await import('node:fs')
  const usage = (file) => readFileSync(file, 'utf8').match(/```js\n(\/\/ usage\.mjs[\s\S]*?)```/)?.[1]
  const ours = usage(path.join(pkgDir, 'README.md'))
  assert.ok(ours, 'bindings-node/README.md has a usage block')
  assert.equal(usage(path.join(pkgDir, '..', 'README.md')), ours)
})
