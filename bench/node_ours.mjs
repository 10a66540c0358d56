// The bench card from Node through our face (etcd-recipes, napi-rs).
//   node node_ours.mjs --endpoints a,b K1 [K2 ...]     one JSON line per workload
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
for (let i = 0; i < 200; i++) await c.put(`${TAG}/warm/${i}`, 'v')
for (const w of work) {
  if (!W[w]) throw new Error(`no workload ${w}`)
  await W[w](c)
}
await c.close()
