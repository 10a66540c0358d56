// The bench card from Node through npm `etcd3` (the peer a Node user would pick).
//   node node_etcd3.mjs --endpoints a,b K1 [K2 ...]     one JSON line per workload
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { Etcd3, EtcdLockFailedError } from 'etcd3'
import * as B from './common.mjs'

const SIDE = 'npm-etcd3'
const TAG = `bench/etcd3-${process.pid}`
const { endpoints, work } = B.args()
const hosts = endpoints.map((e) => (e.startsWith('http') ? e : `http://${e}`))
const connect = () => new Etcd3({ hosts })

// npm etcd3's lock is a try-lock (acquire throws when held): wait for the holder's key
// to be deleted, watching from before the attempt so that no delete is missed, and retry.
async function acquire (cl, name, ttl = 10) {
  for (;;) {
    const watcher = await cl.watch().key(name).create()
    const gone = new Promise((resolve) => watcher.on('delete', resolve))
    try {
      const lock = await cl.lock(name).ttl(ttl).acquire()
      await watcher.cancel()
      return lock
    } catch (e) {
      if (!(e instanceof EtcdLockFailedError)) { await watcher.cancel(); throw e }
    }
    await gone
    await watcher.cancel()
  }
}

const W = {
  async K1 (c) {
    const [rate, ok] = await B.inFlight(B.KV_OPS, async (i) => { await c.put(`${TAG}/k1/${i}`).value(B.VALUE); return true })
    B.emit(SIDE, 'K1', rate, 'ops/s', ok)
  },
  async K2 (c) {
    const [rate, ok] = await B.inFlight(B.KV_OPS, async (i) => (await c.get(`bench/k2/${i}`).buffer()) !== null)
    B.emit(SIDE, 'K2', rate, 'ops/s', ok)
  },
  async K3 (c) {
    const lat = []
    for (let i = 0; i < B.SEQ_PUTS; i++) {
      const t = B.now()
      await c.put(`${TAG}/k3/${i}`).value('v')
      lat.push((B.now() - t) * 1e3)
    }
    B.emit(SIDE, 'K3', B.median(lat), 'us', true)
  },
  async L1 (c) {
    const t = B.now()
    for (let i = 0; i < B.L1_CYCLES; i++) {
      const lock = c.lock(`${TAG}/l1`).ttl(10)
      await lock.acquire()
      await lock.release()
    }
    B.emit(SIDE, 'L1', B.L1_CYCLES / ((B.now() - t) / 1e3), 'cycles/s', true)
  },
  async L2 (c) {
    const clients = Array.from({ length: B.L2_WORKERS }, connect)
    const counter = `${TAG}/l2-counter`
    await c.put(counter).value('0')
    const worker = async (cl) => {
      for (let i = 0; i < B.L2_CYCLES; i++) {
        const lock = await acquire(cl, `${TAG}/l2`)
        const v = Number(await cl.get(counter).string())
        await cl.put(counter).value(String(v + 1))
        await lock.release()
      }
    }
    const t = B.now()
    await Promise.all(clients.map(worker))
    const rate = B.L2_WORKERS * B.L2_CYCLES / ((B.now() - t) / 1e3)
    const end = await c.get(counter).string()
    for (const cl of clients) cl.close()
    B.emit(SIDE, 'L2', rate, 'handoffs/s', end === String(B.L2_WORKERS * B.L2_CYCLES), { counter: Number(end), note: 'try-lock + watch for the delete' })
  },
  async E1 (c) {
    const es = [c.election(`${TAG}/e1`, 10), c.election(`${TAG}/e1`, 10)]
    const elected = (campaign) => new Promise((resolve, reject) => {
      campaign.on('elected', () => resolve(B.now()))
      campaign.on('error', reject)
    })
    let leader = es[0].campaign('a')
    await elected(leader)
    let who = 0
    const times = []
    for (let i = 0; i < B.E1_TURNS; i++) {
      const next = es[1 - who].campaign('b')
      const waiting = elected(next)
      await new Promise((resolve) => setTimeout(resolve, 20)) // the other is queued
      const t = B.now()
      await leader.resign()
      times.push((await waiting) - t)
      leader = next
      who = 1 - who
    }
    await leader.resign()
    B.emit(SIDE, 'E1', B.median(times), 'ms', true)
  },
  async C1 (c) {
    const key = `${TAG}/c1`
    const watcher = await c.watch().key(key).create()
    let last = null
    let wake = null
    watcher.on('put', (kv) => { last = kv.value.toString(); if (wake) wake() })
    const times = []
    for (let i = 0; i < B.EVENTS; i++) {
      const v = `v${i}`
      const t = B.now()
      await c.put(key).value(v)
      while (last !== v) await new Promise((resolve) => { wake = resolve })
      times.push(B.now() - t)
    }
    await watcher.cancel()
    B.emit(SIDE, 'C1', B.median(times), 'ms', true, { note: 'raw watch, no view' })
  },
  async E2 (c) {
    // A child process leads (TTL 2 s), ours queues, the child is SIGKILLed: ms until ours is
    // elected. ok: etcd then reports the old leader's lease gone (TimeToLive -1).
    const times = []
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
        const campaign = c.election(name, B.E2_TTL).campaign('new')
        const waiting = new Promise((resolve, reject) => { campaign.on('elected', () => resolve(B.now())); campaign.on('error', reject) })
        await new Promise((resolve) => setTimeout(resolve, 50)) // ours is queued
        const t = B.now()
        child.kill('SIGKILL')
        const at = await waiting
        const ttl = await c.leaseClient.leaseTimeToLive({ ID: old })
        if (Number(ttl.TTL) !== -1) early++
        times.push(at - t)
        await campaign.resign()
      } finally {
        child.kill('SIGKILL')
        await exited
      }
    }
    B.emit(SIDE, 'E2', B.median(times), 'ms', early === 0, { max_ms: +Math.max(...times).toFixed(2), kills: times.length, led_before_expiry: early })
  },
  async E2CHILD (c) {
    const campaign = c.election(process.env.BENCH_E2_NAME, B.E2_TTL).campaign('old')
    await campaign.wait()
    const key = await campaign.getCampaignKey()
    console.log(`leader ${BigInt('0x' + key.slice(key.lastIndexOf('/') + 1))}`)
    await new Promise(() => setInterval(() => {}, 1 << 30)) // waits to be killed
  },
  async F1 (c) {
    // Puts and lock cycles (npm etcd3's lock: a lease of TTL 3 s per hold, waiting for the
    // holder's delete) in loops while the driver SIGSTOPs a member.
    const ph = new B.Phases()
    const puts = ph.loop((i) => c.put(`${TAG}/f1/put`).value(String(i)))
    const locks = ph.loop(async (i) => {
      const lock = await acquire(c, `${TAG}/f1-lock`, B.F1_TTL)
      try { await c.put(`${TAG}/f1-locked`).value(String(i)) } finally { await lock.release() }
    })
    await ph.waitForEnd()
    const line = ph.line(await puts, await locks, null) // a lease per hold: no session to lose
    B.emit(SIDE, 'F1', line.value, 'ms p99', line.ok, { ...line.extra, note: 'try-lock + watch for the delete; a lease per hold' })
  },
  S1: async () => B.na(SIDE, 'S1', 'no semaphore in npm etcd3'),
  R1: async () => B.na(SIDE, 'R1', 'no read-write lock in npm etcd3'),
  Q1: async () => B.na(SIDE, 'Q1', 'no queue in npm etcd3'),
  W1: async () => B.na(SIDE, 'W1', 'no work queue in npm etcd3'),
  D1: async () => B.na(SIDE, 'D1', 'no service discovery in npm etcd3'),
  D2: async () => B.na(SIDE, 'D2', 'no service discovery in npm etcd3'),
  D2V: async () => B.na(SIDE, 'D2V', 'no service discovery in npm etcd3'),
  C2: async () => B.na(SIDE, 'C2', 'no config view in npm etcd3 (the plain Map row is the peer)')
}

const c = connect()
for (let i = 0; !work.includes('E2CHILD') && i < 200; i++) await c.put(`${TAG}/warm/${i}`).value('v')
for (const w of work) {
  if (!W[w]) throw new Error(`no workload ${w}`)
  await W[w](c)
}
c.close()
