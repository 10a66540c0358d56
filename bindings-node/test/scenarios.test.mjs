// The shared scenario suite, run against the Node face: every scenario of
// tests/scenarios.json (the same file core's and the Python suites run; the language is
// described in tests/README.md) is one test here.
//
// Each op maps to one member of the Node face as docs/vocabulary.md names it (camelCase,
// options objects, durations in milliseconds: `timeout: 0.5` becomes `timeoutMs: 500`,
// lease ids bigint). Scenarios share one etcd, each in its own key namespace; one that
// asks for 3 members gets a cluster of its own. The runner fails on an op it does not
// know, and the last test fails unless every scenario of the file ran.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import path from 'node:path'
import { Client } from 'etcd-recipes'
import { EtcdCluster } from 'etcd-recipes/testing'
import { pkgDir, sleep } from '../testlib/helpers.mjs'

const FILE = path.resolve(pkgDir, '..', 'tests', 'scenarios.json')
const SUITE = JSON.parse(readFileSync(FILE, 'utf8'))
const SCENARIOS = SUITE.scenarios
const STEP_TIMEOUT_MS = (SUITE.step_timeout ?? 30) * 1000
const EXPECTATIONS = new Set(['value', 'match', 'error', 'some', 'gt', 'ne', 'len', 'prefix', 'ended'])
// The error kinds of core (err.code); any other error is a difference, not an outcome.
const KINDS = new Set(['INVALID_ARGUMENT', 'CONNECT', 'TIMEOUT', 'SESSION_LOST', 'LOCK_TIMEOUT', 'LOCK_LOST',
  'NOT_LEADER', 'FENCED', 'COMPACTED', 'PERMISSION_DENIED', 'DECODE', 'CLOSED', 'UNKNOWN_OUTCOME', 'ETCD'])
const ran = new Set()

// ------------------------------------------------------------------------------ values

/** An object of the face (client, guard, view, ...), with its kind from the op table. */
class Handle {
  constructor (kind, obj) { this.kind = kind; this.obj = obj }
}
const END = Symbol('ended')
/** A problem of the scenario or of this runner: always a failure. */
class RunnerError extends Error {}

const short = (s, n = 200) => (s.length <= n ? s : `${s.slice(0, n)}... (${s.length} chars)`)
const json = (v) => JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? `${x}n` : x))
function show (v) {
  if (v instanceof Handle) return `<${v.kind}>`
  if (v === END) return '<ended>'
  if (v === undefined) return 'undefined'
  return short(json(v))
}
function describe (o) {
  if (o.ok) return `ok ${show(o.value)}`
  if (o.code === 'RUNNER') return `runner error: ${short(o.message)}`
  return `error ${o.code} (${short(o.message)})`
}

const utf8 = new TextDecoder('utf-8', { fatal: true })
/** Bytes as the scenario language writes them: text, or {hex} when not UTF-8. The
 * vocabulary says values are Buffers: anything else is a difference. */
function rawBytes (v) {
  if (v === null) return null
  if (!Buffer.isBuffer(v)) throw new RunnerError(`expected a Buffer from the face, got ${typeof v} ${show(v)}`)
  try {
    return utf8.decode(v)
  } catch {
    return { hex: v.toString('hex') }
  }
}
/** A value the vocabulary types: lease ids bigint, tokens and revisions numbers, flags booleans. */
function typed (type, what) {
  return (v) => {
    if (typeof v !== type) throw new RunnerError(`${what} must be a ${type}, got ${typeof v} ${show(v)}`)
    return v
  }
}
const lease = typed('bigint', 'a lease id')
const int = typed('number', 'a number')
const bool = typed('boolean', 'a flag')
const text = typed('string', 'a text')
function reason (r) {
  if (r !== null && typeof r !== 'string') throw new RunnerError(`lost() must give a string or null, got ${show(r)}`)
  return r
}
const nullable = (f) => (v) => (v === null ? null : f(v))
const instance = (i) => ({ id: i.id, addr: i.addr, metadata: i.metadata })
const instances = (l) => [...l].map(instance)
const leader = nullable((l) => ({ key: l.key, value: rawBytes(l.value), fencing_token: int(l.fencingToken), lease_id: lease(l.leaseId) }))
const queueItem = nullable((i) => ({ key: text(i.key), value: rawBytes(i.value), revision: int(i.revision) }))
const deadLetter = (d) => ({ id: text(d.id), value: rawBytes(d.value), deliveries: int(d.deliveries) })
const change = (c) => ({ key: c.key, old: rawBytes(c.old), new: rawBytes(c.new), revision: c.revision })

/** A value argument: text as given, {hex} as a Buffer. */
function toBytes (v) {
  if (typeof v === 'string') return v
  if (v && typeof v === 'object' && Object.keys(v).join() === 'hex') return Buffer.from(v.hex, 'hex')
  throw new RunnerError(`a value must be text or {hex}, got ${show(v)}`)
}
/** Seconds in the file, milliseconds in Node. */
const ms = (s) => Math.round(s * 1000)
/** The options among `names` that the step gives ([file name, Node name, convert]). */
function opts (a, ...names) {
  const o = {}
  for (const [from, to, conv] of names) if (from in a) o[to] = conv ? conv(a[from]) : a[from]
  return o
}
const TTL = ['ttl', 'ttl']
const TIMEOUT = ['timeout', 'timeoutMs', ms]
const DELAY = ['delay', 'delayMs', ms]
const REGISTER = [['readiness', 'readiness'], ['self_heal', 'selfHeal']]
const DISCOVER = [['picker', 'picker'], ['include_not_ready', 'includeNotReady'], ['prefer_zone', 'preferZone'],
  ['down_threshold', 'downThreshold'], ['down_period', 'downPeriodMs', ms]]
/** Call `method` with the options among `names` when the step gives any, else with none. */
function withOpts (obj, method, a, ...names) {
  const o = opts(a, ...names)
  return Object.keys(o).length ? obj[method](o) : obj[method]()
}
async function iterator (kind, x) {
  const it = await x
  if (typeof it?.[Symbol.asyncIterator] !== 'function') throw new RunnerError(`${kind}: not an async iterable: ${show(it)}`)
  return new Handle(kind, it[Symbol.asyncIterator]())
}
async function nextOf (it, f) {
  const r = await it.next()
  return r.done ? END : f(r.value)
}
const h = (kind) => (obj) => new Handle(kind, obj)
const map = async (x, f) => f(await x)

// ------------------------------------------------------------------------------ ops

const OPS = {
  'client.connect': async (env, _, a) =>
    new Handle('client', await Client.connect({ endpoints: env.endpoints, namespace: env.ns + (a.namespace ?? ''), connectTimeoutMs: 10000 })),
  'client.put': (env, c, a) => c.put(a.key, toBytes(a.value)),
  'client.get': (env, c, a) => map(c.get(a.key), rawBytes),
  'client.delete': (env, c, a) => c.delete(a.key),
  'client.revision': (env, c, a) => map(c.revision(), int),
  'client.is_closed': (env, c, a) => bool(c.isClosed),
  'client.close': (env, c, a) => c.close(),
  'client.session': (env, c, a) => map(c.session({ ttl: a.ttl }), h('session')),
  'client.lock': (env, c, a) => map(c.lock(a.name, opts(a, TTL, TIMEOUT)), h('lock')),
  'client.election': (env, c, a) => map(c.election(a.name, opts(a, TTL, TIMEOUT)), h('election')),
  'client.leader': (env, c, a) => map(c.leader(a.name), leader),
  'client.observe_leader': (env, c, a) => iterator('observer', c.observeLeader(a.name)),
  'client.register': (env, c, a) =>
    map(c.register({ service: a.service, id: a.id, addr: a.addr, ...opts(a, ['metadata', 'metadata'], TTL, ...REGISTER) }), h('registration')),
  'client.list_instances': (env, c, a) => map(c.listInstances(a.service), instances),
  'client.discover': (env, c, a) => map(c.discover(a.service, opts(a, ...DISCOVER)), h('view')),
  'client.config': (env, c, a) => map(c.config(a.key, opts(a, ['prefix', 'prefix'])), h('config')),
  'session.lease_id': (env, s) => lease(s.leaseId),
  'session.ttl': (env, s) => int(s.ttl),
  'session.is_alive': (env, s) => bool(s.isAlive),
  'session.state': (env, s) => text(s.state),
  'session.lost': (env, s) => map(s.lost(), reason),
  'session.close': (env, s) => s.close(),
  'session.lock': (env, s, a) => map(s.lock(a.name, opts(a, TIMEOUT)), h('lock')),
  'session.election': (env, s, a) => map(s.election(a.name), h('election')),
  'session.register': (env, s, a) =>
    map(s.register({ service: a.service, id: a.id, addr: a.addr, ...opts(a, ['metadata', 'metadata'], ...REGISTER) }), h('registration')),
  'lock.acquire': (env, l, a) => map('timeout' in a ? l.acquire(opts(a, TIMEOUT)) : l.acquire(), h('guard')),
  'lock.try_acquire': (env, l) => map(l.tryAcquire(), h('guard')),
  'guard.key': (env, g) => text(g.key),
  'guard.name': (env, g) => text(g.name),
  'guard.lease_id': (env, g) => lease(g.leaseId),
  'guard.fencing_token': (env, g) => int(g.fencingToken),
  'guard.is_held': (env, g) => bool(g.isHeld),
  'guard.put': (env, g, a) => g.put(a.key, toBytes(a.value)),
  'guard.delete': (env, g, a) => g.delete(a.key),
  'guard.lost': (env, g) => map(g.lost(), reason),
  'guard.release': (env, g) => g.release(),
  'election.campaign': (env, e, a) =>
    map('timeout' in a ? e.campaign(toBytes(a.value), opts(a, TIMEOUT)) : e.campaign(toBytes(a.value)), h('leadership')),
  'election.leader': (env, e) => map(e.leader(), leader),
  'election.observe': (env, e) => iterator('observer', e.observe()),
  'leadership.is_leader': (env, l) => bool(l.isLeader),
  'leadership.value': (env, l) => rawBytes(l.value),
  'leadership.key': (env, l) => text(l.key),
  'leadership.lease_id': (env, l) => lease(l.leaseId),
  'leadership.fencing_token': (env, l) => int(l.fencingToken),
  'leadership.proclaim': (env, l, a) => l.proclaim(toBytes(a.value)),
  'leadership.resign': (env, l) => l.resign(),
  'leadership.lost': (env, l) => map(l.lost(), reason),
  'observer.next': (env, it) => nextOf(it, leader),
  'registration.state': (env, r) => text(r.state),
  'registration.lease_id': (env, r) => lease(r.leaseId),
  'registration.reregistrations': (env, r) => int(r.reregistrations),
  'registration.update_metadata': (env, r, a) => r.updateMetadata(a.metadata),
  'registration.close': (env, r) => r.close(),
  'registration.readiness': (env, r) => text(r.readiness),
  'registration.set_readiness': (env, r, a) => r.setReadiness(a.readiness),
  'view.instances': (env, v) => map(v.instances(), instances),
  'view.updates': (env, v) => iterator('updates', v.updates()),
  'view.close': (env, v) => v.close(),
  'view.pick': (env, v, a) => nullable(instance)('exclude' in a ? v.pick((i) => !a.exclude.includes(i.id)) : v.pick()),
  'view.available': (env, v) => instances(v.available()),
  'view.note_error': (env, v, a) => v.noteError(a.id),
  'view.is_down': (env, v, a) => bool(v.isDown(a.id)),
  'updates.next': (env, it) => nextOf(it, instances),
  'config.get': (env, v, a) => map(v.get(a.key), rawBytes),
  'config.get_string': (env, v, a) => map(v.getString(a.key), nullable(text)),
  'config.get_json': (env, v, a) => v.getJson(a.key),
  'config.has': (env, v, a) => map(v.has(a.key), bool),
  'config.keys': (env, v) => map(v.keys(), (k) => [...k]),
  'config.changes': (env, v) => iterator('changes', v.changes()),
  'config.close': (env, v) => v.close(),
  'changes.next': (env, it) => nextOf(it, change),
  'client.semaphore': (env, c, a) => map(c.semaphore(a.name, a.permits, opts(a, TTL, TIMEOUT)), h('semaphore')),
  'client.rwlock': (env, c, a) => map(c.rwlock(a.name, opts(a, TTL, TIMEOUT)), h('rwlock')),
  'client.barrier': (env, c, a) => map(c.barrier(a.name, opts(a, TIMEOUT)), h('barrier')),
  'client.double_barrier': (env, c, a) => map(c.doubleBarrier(a.name, a.count, opts(a, TTL, TIMEOUT)), h('double_barrier')),
  'client.queue': (env, c, a) => map(c.queue(a.name, opts(a, TIMEOUT)), h('queue')),
  'client.priority_queue': (env, c, a) => map(c.priorityQueue(a.name, opts(a, TIMEOUT)), h('priority_queue')),
  'client.work_queue': (env, c, a) =>
    map(c.workQueue(a.name, opts(a, TTL, ['max_deliveries', 'maxDeliveries'], TIMEOUT)), h('work_queue')),
  'client.counter': (env, c, a) => map(c.counter(a.key), h('counter')),
  'semaphore.acquire': (env, s, a) => map(withOpts(s, 'acquire', a, TIMEOUT), h('guard')),
  'semaphore.try_acquire': (env, s) => map(s.tryAcquire(), h('guard')),
  'rwlock.read': (env, rw, a) => map(withOpts(rw, 'read', a, TIMEOUT), h('guard')),
  'rwlock.write': (env, rw, a) => map(withOpts(rw, 'write', a, TIMEOUT), h('guard')),
  'rwlock.try_read': (env, rw) => map(rw.tryRead(), h('guard')),
  'rwlock.try_write': (env, rw) => map(rw.tryWrite(), h('guard')),
  'barrier.hold': (env, b) => map(b.hold(), bool),
  'barrier.release': (env, b) => map(b.release(), bool),
  'barrier.is_held': (env, b) => map(b.isHeld(), bool),
  'barrier.wait': (env, b, a) => withOpts(b, 'wait', a, TIMEOUT),
  'double_barrier.enter': (env, d, a) => withOpts(d, 'enter', a, TIMEOUT),
  'double_barrier.leave': (env, d, a) => withOpts(d, 'leave', a, TIMEOUT),
  'queue.enqueue': (env, q, a) => map(q.enqueue(toBytes(a.value)), text),
  'queue.dequeue': (env, q, a) => map(withOpts(q, 'dequeue', a, TIMEOUT), queueItem),
  'queue.try_dequeue': (env, q) => map(q.tryDequeue(), queueItem),
  'queue.length': (env, q) => map(q.length(), int),
  'priority_queue.enqueue': (env, q, a) => map(q.enqueue(toBytes(a.value), a.priority), text),
  'priority_queue.dequeue': (env, q, a) => map(withOpts(q, 'dequeue', a, TIMEOUT), queueItem),
  'priority_queue.try_dequeue': (env, q) => map(q.tryDequeue(), queueItem),
  'priority_queue.length': (env, q) => map(q.length(), int),
  'work_queue.put': (env, q, a) => map('delay' in a ? q.put(toBytes(a.value), opts(a, DELAY)) : q.put(toBytes(a.value)), text),
  'work_queue.receive': (env, q, a) => map(withOpts(q, 'receive', a, TIMEOUT), h('work_item')),
  'work_queue.try_receive': (env, q) => map(q.tryReceive(), h('work_item')),
  'work_queue.length': (env, q) => map(q.length(), int),
  'work_queue.dead_letters': (env, q) => map(q.deadLetters(), (l) => [...l].map(deadLetter)),
  'work_queue.requeue_dead': (env, q, a) => map(q.requeueDead(a.id), bool),
  'work_queue.requeue_all_dead': (env, q) => map(q.requeueAllDead(), int),
  'work_item.id': (env, i) => text(i.id),
  'work_item.value': (env, i) => rawBytes(i.value),
  'work_item.deliveries': (env, i) => int(i.deliveries),
  'work_item.fencing_token': (env, i) => int(i.fencingToken),
  'work_item.lease_id': (env, i) => lease(i.leaseId),
  'work_item.is_held': (env, i) => bool(i.isHeld),
  'work_item.ack': (env, i) => i.ack(),
  'work_item.nack': (env, i, a) => withOpts(i, 'nack', a, DELAY),
  'work_item.lost': (env, i) => map(i.lost(), reason),
  'counter.get': (env, k) => map(k.get(), int),
  'counter.add': (env, k, a) => map('delta' in a ? k.add(a.delta) : k.add(), int),
  'counter.compare_and_set': (env, k, a) => map(k.compareAndSet(a.expected, a.new), bool),
  'counter.set': (env, k, a) => map(k.set(a.value), int),
  'task.await': async (env, t) => {
    const o = await t.promise
    if (o.ok) return o.value
    throw Object.assign(new Error(o.message), { replay: o })
  },
  'task.done': (env, t) => t.done,
  'admin.keys': async (env, _, a) => {
    const view = await env.admin.config(a.prefix, { prefix: true })
    try {
      return [...(await view.keys())].sort()
    } finally {
      await view.close()
    }
  },
  'admin.lease_exists': (env, _, a) => env.admin.leaseExists(a.lease),
  'admin.revoke_lease': (env, _, a) => env.admin.revokeLease(a.lease),
}
// Ops whose result is nothing (whatever the face gives), but for HAS_RESULT.
const NO_RESULT = /\.(close|release|resign|proclaim|revoke_lease|update_metadata|set_readiness|note_error|wait|enter|leave|ack|nack)$/
const HAS_RESULT = new Set(['barrier.release'])

/** Run one op; resolves to an outcome {ok, value} or {ok: false, code, message}, never rejects. */
async function execute (env, op, subject, args) {
  const fn = OPS[op]
  if (!fn) return { ok: false, code: 'RUNNER', message: `unknown op ${op}` }
  try {
    let value = await fn(env, subject, args)
    if (NO_RESULT.test(op) && !HAS_RESULT.has(op)) value = null
    if (value === undefined) throw new RunnerError(`${op} gave undefined (a member missing from the face?)`)
    return { ok: true, value }
  } catch (e) {
    if (e?.replay) return e.replay
    if (e instanceof RunnerError) return { ok: false, code: 'RUNNER', message: e.message }
    if (e instanceof Error && KINDS.has(e.code)) return { ok: false, code: e.code, message: e.message }
    // A member missing or called differently: a difference from the vocabulary.
    return { ok: false, code: 'RUNNER', message: `${e?.name ?? typeof e}${e?.code ? ` [${e.code}]` : ''}: ${e?.message ?? e}` }
  }
}

// ------------------------------------------------------------------------------ expectations

function same (a, b) {
  const num = (x) => typeof x === 'number' || typeof x === 'bigint'
  if (num(a) && num(b)) {
    if (typeof a === typeof b) return a === b
    return Number.isInteger(Number(a)) && Number.isInteger(Number(b)) && BigInt(a) === BigInt(b)
  }
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => same(x, b[i]))
  if (a && b && typeof a === 'object' && typeof b === 'object' && !Array.isArray(a) && !Array.isArray(b)) {
    const ka = Object.keys(a).sort()
    const kb = Object.keys(b).sort()
    return ka.join('\0') === kb.join('\0') && ka.every((k) => same(a[k], b[k]))
  }
  return a === b
}

function varData (vars, name) {
  if (!vars.has(name)) throw new RunnerError(`$${name} is not set`)
  const v = vars.get(name)
  if (v instanceof Handle || v === END) throw new RunnerError(`$${name} is a ${show(v)}, not data`)
  return v
}

/** Replace "$name" by the variable's value and ${name} inside text by its text. */
function resolve (j, vars) {
  if (typeof j === 'string') {
    if (j.startsWith('$') && !j.startsWith('${')) return varData(vars, j.slice(1))
    return j.replace(/\$\{([^}]*)\}/g, (_, name) => {
      const v = varData(vars, name)
      return typeof v === 'string' ? v : String(v)
    })
  }
  if (Array.isArray(j)) return j.map((x) => resolve(x, vars))
  if (j && typeof j === 'object') return Object.fromEntries(Object.entries(j).map(([k, v]) => [k, resolve(v, vars)]))
  return j
}

/** null if `o` meets the expectation, else how it does not. */
function check (exp, o) {
  if (!o.ok && o.code === 'RUNNER') return `runner error: ${short(o.message)}`
  if ('error' in exp) return !o.ok && o.code === exp.error ? null : `expected error ${exp.error}, got ${describe(o)}`
  if (!o.ok) return `expected success, got ${describe(o)}`
  const v = o.value
  if (exp.ended === true) return v === END ? null : `expected the iterator to have ended, got ${describe(o)}`
  if (v instanceof Handle || v === END) return Object.keys(exp).length === 0 ? null : `expected data, got ${describe(o)}`
  for (const [k, want] of Object.entries(exp)) {
    let ok
    switch (k) {
      case 'value': ok = same(v, want); break
      case 'match': ok = v !== null && typeof v === 'object' && Object.entries(want).every(([f, x]) => same(v[f] ?? null, x)); break
      case 'some': ok = (v !== null) === (want === true); break
      case 'gt': ok = (typeof v === 'number' || typeof v === 'bigint') && BigInt(v) > BigInt(want); break
      case 'ne': ok = !same(v, want); break
      case 'len': ok = Array.isArray(v) && v.length === want; break
      case 'prefix': ok = typeof v === 'string' && v.startsWith(want); break
      default: return `unknown expectation ${k}`
    }
    if (!ok) return `expected ${k} ${short(json(want))}, got ${describe(o)}`
  }
  return null
}

// ------------------------------------------------------------------------------ running

/** Bound a promise; resolves to `onTimeout` (not a rejection) when it does not settle in time. */
function bounded (p, timeoutMs, onTimeout) {
  let t
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise((resolve) => { t = setTimeout(() => resolve(onTimeout), Math.max(timeoutMs, 1)) }),
  ])
}
const TIMED_OUT = Symbol('timed out')

class Run {
  constructor (env) {
    this.env = env
    this.vars = new Map([['ns', env.ns]])
    this.clients = []
  }

  keep (name, v) {
    if (v instanceof Handle && v.kind === 'client') this.clients.push(v.obj)
    if (name) this.vars.set(name, v)
  }

  async step (st) {
    const op = st.op
    let subject
    if ('on' in st) {
      if (!this.vars.has(st.on)) return `$${st.on} is not set`
      const hd = this.vars.get(st.on)
      const want = op.split('.')[0]
      if (!(hd instanceof Handle) || hd.kind !== want) return `$${st.on} is ${show(hd)}, not a ${want}`
      subject = hd.obj
    }
    let args, until, expect
    try {
      args = resolve(st.args ?? {}, this.vars)
      until = 'until' in st ? resolve(st.until, this.vars) : undefined
      expect = resolve(st.expect ?? {}, this.vars)
    } catch (e) {
      return e.message
    }
    const run = () => execute(this.env, op, subject, args)

    if (st.background) {
      const task = { done: false }
      task.promise = run().finally(() => { task.done = true })
      this.keep(st.as, new Handle('task', task))
      return null
    }
    if (until !== undefined) {
      const deadline = Date.now() + STEP_TIMEOUT_MS
      for (;;) {
        const o = await bounded(run(), deadline - Date.now(), TIMED_OUT)
        if (o === TIMED_OUT) return `not true within ${STEP_TIMEOUT_MS / 1000} s: ${short(json(st.until))}`
        if (!o.ok && o.code === 'RUNNER') return `runner error: ${short(o.message)}`
        const why = check(until, o)
        if (why === null) {
          if (o.ok) this.keep(st.as, o.value)
          return null
        }
        if (Date.now() >= deadline) return `not within ${STEP_TIMEOUT_MS / 1000} s: ${why}`
        await sleep(25)
      }
    }
    const o = await bounded(run(), STEP_TIMEOUT_MS, TIMED_OUT)
    if (o === TIMED_OUT) return `did not finish within ${STEP_TIMEOUT_MS / 1000} s`
    const why = check(expect, o)
    if (why === null && o.ok) this.keep(st.as, o.value)
    return why
  }

  /** Close every client of the scenario (ending all it made). */
  async finish () {
    for (const c of [...this.clients, this.env.admin]) {
      await bounded(Promise.resolve().then(() => c.close()).catch(() => {}), 10000, null)
    }
  }
}

async function runScenario (index, sc, endpoints) {
  const ns = `scn-${String(index).padStart(2, '0')}-${randomBytes(4).toString('hex')}/`
  const admin = await Client.connect({ endpoints, namespace: ns, connectTimeoutMs: 10000 })
  const run = new Run({ endpoints, ns, admin })
  try {
    for (const [i, st] of sc.steps.entries()) {
      const why = await run.step(st)
      if (why !== null) return `step ${i + 1} (${st.op}${'on' in st ? ` on $${st.on}` : ''}): ${why}`
    }
    return null
  } finally {
    await run.finish()
  }
}

/** The file checked against its own op table and this runner. */
function problemsInFile () {
  const out = []
  for (const op of Object.keys(SUITE.ops)) if (!(op in OPS)) out.push(`op ${op} of the file is not known to the Node runner`)
  const names = SCENARIOS.map((s) => s.name)
  for (const n of new Set(names)) if (names.indexOf(n) !== names.lastIndexOf(n)) out.push(`scenario name ${n} is not unique`)
  for (const sc of SCENARIOS) {
    if (![undefined, 1, 3].includes(sc.members)) out.push(`${sc.name}: members must be 1 or 3`)
    for (const [i, st] of sc.steps.entries()) {
      const at = `${sc.name}: step ${i + 1}`
      const decl = SUITE.ops[st.op]
      if (!decl) { out.push(`${at}: op ${st.op} is not in the file's ops table`); continue }
      const declared = decl.args.map((d) => d.replace(/\?$/, ''))
      for (const k of Object.keys(st.args ?? {})) if (!declared.includes(k)) out.push(`${at}: ${st.op} takes no argument ${k}`)
      for (const d of decl.args) if (!d.endsWith('?') && !(d in (st.args ?? {}))) out.push(`${at}: ${st.op} needs argument ${d}`)
      const needsSubject = !(st.op === 'client.connect' || st.op.startsWith('admin.'))
      if (needsSubject !== ('on' in st)) out.push(`${at}: ${st.op} ${needsSubject ? 'needs' : 'takes no'} a subject ("on")`)
      for (const f of ['expect', 'until']) {
        for (const k of Object.keys(st[f] ?? {})) if (!EXPECTATIONS.has(k)) out.push(`${at}: unknown expectation ${k}`)
      }
      if (st.background && (!st.as || 'expect' in st || 'until' in st)) out.push(`${at}: a background step needs "as" and takes no expectation`)
    }
  }
  return out
}

let etcd
before(async () => { etcd = await EtcdCluster.start() })
after(async () => { await etcd?.close() })

test('the scenario file is valid for this runner', () => {
  const problems = problemsInFile()
  assert.equal(problems.length, 0, `${problems.length} problems in ${FILE}:\n  ${problems.join('\n  ')}`)
})

for (const [index, sc] of SCENARIOS.entries()) {
  test(sc.name, async () => {
    ran.add(sc.name)
    const members = sc.members ?? 1
    const own = members > 1 ? await EtcdCluster.start({ members }) : null
    try {
      const why = await runScenario(index, sc, (own ?? etcd).endpoints)
      assert.equal(why, null, `${sc.name}: ${why}`)
    } finally {
      await own?.close()
    }
  })
}

test('every scenario of the file ran', () => {
  const missing = SCENARIOS.map((s) => s.name).filter((n) => !ran.has(n))
  assert.equal(missing.length, 0, `${missing.length} of ${SCENARIOS.length} scenarios did not run: ${json(missing.slice(0, 5))}`)
})
