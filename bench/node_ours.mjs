// The bench card from Node through our face (etcd-recipes, napi-rs).
//   node node_ours.mjs --endpoints a,b K1 [K2 ...]     one JSON line per workload
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { Client } from 'etcd-recipes'
import * as B from './common.mjs'

const SIDE = 'ours'
const TAG = `bench/node-${process.pid}`
const { endpoints, work } = B.args()

const W = {
  async K1 (c) {
    const [rate, ok] = await B.inFlight(B.KV_OPS, async (i) => { await c.put(`${TAG}/k1/${i}`, B.VALUE); return true })
    B.emit(SIDE, 'K1', rate, 'ops/s', ok)
  },
  async K2 (c) {
    const [rate, ok] = await B.inFlight(B.KV_OPS, async (i) => (await c.get(`bench/k2/${i}`)) !== null)
    B.emit(SIDE, 'K2', rate, 'ops/s', ok)
  },
  async K3 (c) {
    const lat = []
    for (let i = 0; i < B.SEQ_PUTS; i++) {
      const t = B.now()
      await c.put(`${TAG}/k3/${i}`, 'v')
      lat.push((B.now() - t) * 1e3)
    }
    B.emit(SIDE, 'K3', B.median(lat), 'us', true)
  },
  async L1 (c) {
    const s = await c.session({ ttl: 10 })
    const lock = s.lock(`${TAG}/l1`)
    const t = B.now()
    for (let i = 0; i < B.L1_CYCLES; i++) await (await lock.acquire()).release()
    B.emit(SIDE, 'L1', B.L1_CYCLES / ((B.now() - t) / 1e3), 'cycles/s', true)
    await s.close()
  },
  async L2 (c) {
    const clients = await Promise.all(Array.from({ length: B.L2_WORKERS }, () => Client.connect({ endpoints })))
    const sessions = await Promise.all(clients.map((cl) => cl.session({ ttl: 10 })))
    const counter = `${TAG}/l2-counter`
    await c.put(counter, '0')
    const worker = async (cl, s) => {
      const lock = s.lock(`${TAG}/l2`)
      for (let i = 0; i < B.L2_CYCLES; i++) {
        const g = await lock.acquire()
        const v = Number(await cl.getString(counter))
        await cl.put(counter, String(v + 1))
        await g.release()
      }
    }
    const t = B.now()
    await Promise.all(clients.map((cl, i) => worker(cl, sessions[i])))
    const rate = B.L2_WORKERS * B.L2_CYCLES / ((B.now() - t) / 1e3)
    const end = await c.getString(counter)
    for (const s of sessions) await s.close()
    for (const cl of clients) await cl.close()
    B.emit(SIDE, 'L2', rate, 'handoffs/s', end === String(B.L2_WORKERS * B.L2_CYCLES), { counter: Number(end) })
  },
  async E1 (c) {
    const ss = [await c.session({ ttl: 10 }), await c.session({ ttl: 10 })]
    const es = ss.map((s) => s.election(`${TAG}/e1`))
    let leader = await es[0].campaign('a')
    let who = 0
    const times = []
    const resigns = []
    for (let i = 0; i < B.E1_TURNS; i++) {
      const waiting = es[1 - who].campaign('b').then((l) => [l, B.now()])
      await new Promise((resolve) => setTimeout(resolve, 20)) // the other is queued
      const t = B.now()
      await leader.resign()
      resigns.push(B.now() - t)
      const [l, at] = await waiting
      times.push(at - t)
      leader = l
      who = 1 - who
    }
    await leader.resign()
    for (const s of ss) await s.close()
    B.emit(SIDE, 'E1', B.median(times), 'ms', true, { resign_ms: +B.median(resigns).toFixed(3) })
  },
  async D1 (c) {
    const service = `bench-node-d1-${process.pid}`
    const view = await c.discover(service)
    const events = view.events()
    const until = async (kind, id) => { for (;;) { const { value } = await events.next(); if (value.kind === kind && value.id === id) return } }
    const times = []
    for (let i = 0; i < B.EVENTS; i++) {
      const t = B.now()
      const reg = await c.register({ service, id: `i${i}`, addr: '127.0.0.1:1', ttl: 30 })
      await until('up', `i${i}`)
      times.push(B.now() - t)
      await reg.close()
      await until('down', `i${i}`)
    }
    view.close()
    B.emit(SIDE, 'D1', B.median(times), 'ms', true)
  },
  async D2 (c) {
    const service = `bench-node-d2-${process.pid}`
    const regs = []
    let t = B.now()
    await B.inFlight(B.D2_INSTANCES, async (i) => { regs.push(await c.register({ service, id: `i${i}`, addr: '127.0.0.1:1', ttl: 30 })); return true })
    const registerS = (B.now() - t) / 1e3
    const fresh = await Client.connect({ endpoints })
    t = B.now()
    const view = await fresh.discover(service)
    const loadS = (B.now() - t) / 1e3
    const seen = view.instances().length
    view.close()
    await fresh.close()
    await B.inFlight(regs.length, async (i) => { await regs[i].close(); return true })
    B.emit(SIDE, 'D2', registerS, 's', seen === B.D2_INSTANCES, { load_s: +loadS.toFixed(4), seen })
  },
  async D2V () {
    // A fresh client's view of the 10,000 instances the driver wrote under bench-d2v/.
    const fresh = await Client.connect({ endpoints })
    const t = B.now()
    const view = await fresh.discover('bench-d2v')
    const secs = (B.now() - t) / 1e3
    const seen = view.instances().length
    view.close()
    await fresh.close()
    B.emit(SIDE, 'D2V', secs, 's', seen === 10_000, { seen })
  },
  async C1 (c) {
    const key = `${TAG}/c1`
    const cfg = await c.config(key)
    const changes = cfg.changes()
    const times = []
    for (let i = 0; i < B.EVENTS; i++) {
      const v = `v${i}`
      const t = B.now()
      await c.put(key, v)
      while (cfg.getString(key) !== v) await changes.next()
      times.push(B.now() - t)
    }
    cfg.close()
    B.emit(SIDE, 'C1', B.median(times), 'ms', true)
  },
  async E2 (c) {
    // A child process leads (TTL 2 s), ours (TTL 2 s) queues, the child is SIGKILLed: ms until
    // ours leads. ok: etcd then reports the old leader's lease gone (never led before it expired).
    const times = []
    let ok = true
    let early = 0
    for (let turn = 0; turn < B.E2_KILLS; turn++) {
      const name = `${TAG}/e2-${turn}`
      const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--endpoints', endpoints.join(','), 'E2CHILD'],
        { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, BENCH_E2_NAME: name } })
      const exited = new Promise((resolve) => child.on('exit', resolve))
      try {
        let old = null
        for await (const line of createInterface({ input: child.stdout })) {
          if (line.startsWith('leader ')) { old = line.split(' ')[1]; break }
        }
        if (old === null) throw new Error('the E2 child ended before leading')
        const s = await c.session({ ttl: B.E2_TTL })
        const waiting = s.election(name).campaign('new').then((l) => [l, B.now()])
        await new Promise((resolve) => setTimeout(resolve, 50)) // ours is queued
        const t = B.now()
        child.kill('SIGKILL')
        const [lead, at] = await waiting
        if (await c.leaseExists(old)) early++
        ok &&= lead.isLeader
        times.push(at - t)
        await lead.resign()
        await s.close()
      } finally {
        child.kill('SIGKILL')
        await exited
      }
    }
    B.emit(SIDE, 'E2', B.median(times), 'ms', ok && early === 0, { max_ms: +Math.max(...times).toFixed(2), kills: times.length, led_before_expiry: early })
  },
  async E2CHILD (c) {
    const s = await c.session({ ttl: B.E2_TTL })
    const lead = await s.election(process.env.BENCH_E2_NAME).campaign('old')
    console.log(`leader ${lead.leaseId}`)
    await new Promise(() => setInterval(() => {}, 1 << 30)) // waits to be killed
  },
  async S1 () {
    // 12 workers, each its own client and session, 50 cycles on a 3-permit semaphore; inside,
    // a counter in etcd goes up and down (atomic add): above 3 is an overlap.
    const clients = await Promise.all(Array.from({ length: B.S1_WORKERS }, () => Client.connect({ endpoints })))
    const sessions = await Promise.all(clients.map((cl) => cl.session({ ttl: 10 })))
    const name = `${TAG}/s1`
    const inside = `${TAG}/s1-inside`
    let over = 0
    let most = 0
    const worker = async (cl, s) => {
      const sem = s.semaphore(name, B.S1_PERMITS)
      const n = cl.counter(inside)
      for (let i = 0; i < B.S1_CYCLES; i++) {
        const g = await sem.acquire()
        const v = await n.add(1)
        most = Math.max(most, v)
        if (v > B.S1_PERMITS) over++
        if ((await n.add(-1)) < 0) over++
        await g.release()
      }
    }
    const t = B.now()
    await Promise.all(clients.map((cl, i) => worker(cl, sessions[i])))
    const rate = B.S1_WORKERS * B.S1_CYCLES / ((B.now() - t) / 1e3)
    const end = await clients[0].counter(inside).get()
    for (const s of sessions) await s.close()
    for (const cl of clients) await cl.close()
    B.emit(SIDE, 'S1', rate, 'acquisitions/s', over === 0 && end === 0, { most_inside: most })
  },
  async R1 () {
    // 8 readers + 2 writers, each its own client and session, 100 cycles on one RwLock; inside,
    // an occupancy counter (+1 a reader, +1000 a writer, atomic add): a reader seeing a writer
    // or a writer seeing anyone is an overlap.
    const all = B.R1_READERS + B.R1_WRITERS
    const clients = await Promise.all(Array.from({ length: all }, () => Client.connect({ endpoints })))
    const sessions = await Promise.all(clients.map((cl) => cl.session({ ttl: 10 })))
    const name = `${TAG}/r1`
    const state = `${TAG}/r1-state`
    let overlaps = 0
    const worker = async (i, cl, s) => {
      const rw = s.rwlock(name)
      const n = cl.counter(state)
      for (let k = 0; k < B.R1_CYCLES; k++) {
        if (i < B.R1_WRITERS) {
          const g = await rw.write()
          if ((await n.add(B.R1_WRITER)) !== B.R1_WRITER) overlaps++
          await n.add(-B.R1_WRITER)
          await g.release()
        } else {
          const g = await rw.read()
          if ((await n.add(1)) >= B.R1_WRITER) overlaps++
          await n.add(-1)
          await g.release()
        }
      }
    }
    const t = B.now()
    await Promise.all(clients.map((cl, i) => worker(i, cl, sessions[i])))
    const rate = all * B.R1_CYCLES / ((B.now() - t) / 1e3)
    const end = await clients[0].counter(state).get()
    for (const s of sessions) await s.close()
    for (const cl of clients) await cl.close()
    B.emit(SIDE, 'R1', rate, 'cycles/s', overlaps === 0 && end === 0, { overlaps })
  },
  async Q1 () {
    // 2 producers enqueue 2,500 values each, 2 consumers dequeue until all 5,000 are taken,
    // each its own client; items/s from the first enqueue to the last dequeue.
    const producers = await Promise.all([0, 1].map(() => Client.connect({ endpoints })))
    const consumers = await Promise.all([0, 1].map(() => Client.connect({ endpoints })))
    const name = `${TAG}/q1`
    const seen = new Map()
    let taken = 0
    let finished = 0
    const consume = async (cl) => {
      const q = cl.queue(name)
      while (taken < B.Q1_ITEMS) {
        let item
        try { item = await q.dequeue({ timeoutMs: 100 }) } catch (e) { if (e.code === 'LOCK_TIMEOUT') continue; throw e }
        const v = item.valueString
        seen.set(v, (seen.get(v) ?? 0) + 1)
        if (++taken === B.Q1_ITEMS) finished = B.now()
      }
    }
    const produce = async (p, cl) => {
      const q = cl.queue(name)
      for (let k = 0; k < B.Q1_ITEMS / 2; k++) await q.enqueue(`p${p}-${k}`)
    }
    const t = B.now()
    await Promise.all([...consumers.map(consume), ...producers.map((cl, p) => produce(p, cl))])
    const rate = B.Q1_ITEMS / ((finished - t) / 1e3)
    const left = await producers[0].queue(name).length()
    let dups = 0
    for (const n of seen.values()) dups += n - 1
    for (const cl of [...producers, ...consumers]) await cl.close()
    B.emit(SIDE, 'Q1', rate, 'items/s', seen.size === B.Q1_ITEMS && dups === 0 && left === 0, { distinct: seen.size, duplicates: dups, left })
  },
  async W1 (c) {
    // One producer puts 2,000 items (16 in flight) while 4 consumers (each its own client)
    // receive and ack; after 100 acks the first consumer takes one more item and is killed
    // holding it (its claim's lease revoked by another client, its loop abandoned, its client
    // closed). items/s until the last ack. ok: every item acked exactly once or dead-lettered.
    const name = `${TAG}/w1`
    const producer = await Client.connect({ endpoints })
    const clients = await Promise.all(Array.from({ length: B.W1_CONSUMERS }, () => Client.connect({ endpoints })))
    const acked = new Map()
    let count = 0
    let redelivered = 0
    let finished = 0
    let onHeld
    const held = new Promise((resolve) => { onHeld = resolve })
    let killed = false
    const consume = async (i) => {
      const q = clients[i].workQueue(name, { ttl: 10, maxDeliveries: 5 })
      let mine = 0
      while (count < B.W1_ITEMS && !(i === 0 && killed)) {
        let item
        try { item = await q.receive({ timeoutMs: 100 }) } catch (e) { if (e.code === 'LOCK_TIMEOUT') continue; throw e }
        if (i === 0 && mine === B.W1_KILL_AFTER) { onHeld([item.leaseId, item.id]); return } // killed holding it
        if (item.deliveries > 1) redelivered++
        try { await item.ack() } catch (e) { if (e.code === 'FENCED') continue; throw e }
        mine++
        acked.set(item.id, (acked.get(item.id) ?? 0) + 1)
        if (++count === B.W1_ITEMS) finished = B.now()
      }
    }
    const pq = producer.workQueue(name)
    const t = B.now()
    const loops = clients.map((_, i) => consume(i))
    await B.inFlight(B.W1_ITEMS, async (k) => { await pq.put(`item-${k}`); return true }, 16)
    const [lease, heldId] = await held
    killed = true
    await producer.revokeLease(lease)
    await loops[0]
    await clients[0].close()
    await Promise.all(loops.slice(1))
    const rate = B.W1_ITEMS / ((finished - t) / 1e3)
    const dead = (await pq.deadLetters()).length
    const left = await pq.length()
    let twice = 0
    for (const n of acked.values()) if (n > 1) twice++
    const heldAcked = acked.get(heldId) ?? 0
    for (const cl of [...clients.slice(1), producer]) await cl.close()
    const ok = acked.size + dead === B.W1_ITEMS && twice === 0 && left === 0 && (heldAcked === 1 || dead > 0)
    B.emit(SIDE, 'W1', rate, 'items/s', ok, { acked: acked.size, acked_twice: twice, dead_lettered: dead, redelivered, killed_item_acked: heldAcked, items_left: left })
  },
  async F1 (c) {
    // Puts and lock cycles (a session of TTL 3 s) in loops while the driver SIGSTOPs a member.
    const ph = new B.Phases()
    let s = await c.session({ ttl: B.F1_TTL })
    let lost = 0
    const key = `${TAG}/f1`
    const puts = ph.loop((i) => c.put(`${key}/put`, String(i)))
    const locks = ph.loop(async (i) => {
      if (!s.isAlive) { lost++; s = await c.session({ ttl: B.F1_TTL }) }
      const g = await s.lock(`${key}-lock`).acquire({ timeoutMs: 10_000 })
      try { await g.put(`${key}-locked`, String(i)) } finally { await g.release() }
    })
    await ph.waitForEnd()
    const [p, l] = [await puts, await locks]
    if (!s.isAlive) lost++
    await s.close()
    const line = ph.line(p, l, lost)
    B.emit(SIDE, 'F1', line.value, 'ms p99', line.ok, line.extra)
  },
  async C2 (c) {
    const key = `${TAG}/c2`
    await c.put(key, 'value')
    const cfg = await c.config(key)
    const map = new Map([[key, Buffer.from('value')]]) // what a hand-rolled watch would feed
    for (const [side, get] of [['ours', (k) => cfg.get(k)], ['map', (k) => map.get(k)]]) {
      let hits = 0
      const t = B.now()
      for (let i = 0; i < B.C2_READS; i++) if (get(key) != null) hits++
      B.emit(side, 'C2', B.C2_READS / ((B.now() - t) / 1e3), 'reads/s', hits === B.C2_READS)
    }
    cfg.close()
  }
}

const c = await Client.connect({ endpoints })
for (let i = 0; !work.includes('E2CHILD') && i < 200; i++) await c.put(`${TAG}/warm/${i}`, 'v')
for (const w of work) {
  if (!W[w]) throw new Error(`no workload ${w}`)
  await W[w](c)
}
await c.close()
