// Shared by the Node sides of the bench: arguments, the card's sizes, JSON lines.
export const KV_OPS = 20_000 // K1, K2
export const IN_FLIGHT = 64
export const SEQ_PUTS = 2_000 // K3
export const L1_CYCLES = 500
export const L2_WORKERS = 8
export const L2_CYCLES = 100
export const E1_TURNS = 30
export const EVENTS = 200 // D1, C1
export const D2_INSTANCES = 2_000
export const C2_READS = 1_000_000
export const VALUE = Buffer.alloc(256, 'x')
export const E2_TTL = 2 // E2: candidates' TTL (s)
export const E2_KILLS = 3 // kills per run, the figure is their median
export const S1_PERMITS = 3
export const S1_WORKERS = 12
export const S1_CYCLES = 50
export const R1_READERS = 8
export const R1_WRITERS = 2
export const R1_CYCLES = 100
export const R1_WRITER = 1000 // R1's occupancy counter: +1 per reader inside, +1000 per writer
export const Q1_ITEMS = 5_000 // 2 producers, 2 consumers
export const W1_ITEMS = 2_000
export const W1_CONSUMERS = 4
export const W1_KILL_AFTER = 100 // the first consumer is killed after 100 acks
export const F1_TTL = 3 // F1's lock session

/** `--endpoints a,b [--side S] WORKLOAD...` -> { endpoints, side, work } */
export function args () {
  const out = { endpoints: [], side: null, work: [] }
  const argv = process.argv.slice(2)
  while (argv.length) {
    const a = argv.shift()
    if (a === '--endpoints') out.endpoints = argv.shift().split(',')
    else if (a === '--side') out.side = argv.shift()
    else out.work.push(a.toUpperCase())
  }
  return out
}

export function emit (side, workload, value, unit, ok, extra = {}) {
  console.log(JSON.stringify({ side, lang: 'node', workload, value, unit, ok, ...extra }))
}

export const na = (side, workload, why) => emit(side, workload, null, '', null, { na: why })

export function median (v) {
  const s = [...v].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

export const now = () => performance.now() // ms

/** op(i) for i < n, `width` at a time; [ops/s, every op returned true] */
export async function inFlight (n, op, width = IN_FLIGHT) {
  let next = 0
  let bad = 0
  const worker = async () => {
    while (next < n) if (!(await op(next++))) bad++
  }
  const t = now()
  await Promise.all(Array.from({ length: width }, worker))
  return [n / ((now() - t) / 1e3), bad === 0]
}

export function p99 (v) {
  if (!v.length) return null
  const s = [...v].sort((a, b) => a - b)
  return s[Math.round((s.length - 1) * 0.99)]
}

/**
 * F1's samples: [start, ms, failed] of every op; `ready` on stdout, then the driver writes
 * `fault` (a member is SIGSTOPped) and `end` (resumed: stop) on stdin.
 */
export class Phases {
  constructor () { this.fault = null; this.stopped = false }
  async waitForEnd () {
    const { createInterface } = await import('node:readline')
    const rl = createInterface({ input: process.stdin })
    console.log('ready')
    for await (const line of rl) {
      if (line.trim() === 'fault') this.fault = now()
      if (line.trim() === 'end') break
    }
    rl.close()
    process.stdin.destroy()
    this.stopped = true
  }

  async loop (op) {
    const out = []
    for (let i = 0; !this.stopped; i++) {
      const t0 = now()
      let failed = false
      try { await op(i) } catch { failed = true }
      out.push([t0, now() - t0, failed])
      if (failed) await new Promise((resolve) => setTimeout(resolve, 5)) // a failure at once must not spin
    }
    return out
  }

  phase (samples, a, b) {
    if (this.fault === null) throw new Error('no `fault` line on stdin')
    // In the phase: started in it, or (the first) still running when the fault began.
    const got = samples.filter(([t0, ms]) => t0 - this.fault < b * 1e3 && (t0 - this.fault >= a * 1e3 || (a === 0 && t0 - this.fault + ms >= 0)))
    const p = p99(got.map((x) => x[1]))
    return [p === null ? null : +p.toFixed(2), got.length, got.filter((x) => x[2]).length]
  }

  line (puts, locks, lost) {
    const [ps, pn1, pe1] = this.phase(puts, 0, 2)
    const [pa, pn2, pe2] = this.phase(puts, 2, 10)
    const [ls, ln1, le1] = this.phase(locks, 0, 2)
    const [la, ln2, le2] = this.phase(locks, 2, 10)
    return {
      value: ps,
      extra: { after_p99_ms: pa, lock_p99_ms: ls, lock_after_p99_ms: la, ops: pn1 + pn2, lock_cycles: ln1 + ln2, errors: pe1 + pe2 + le1 + le2, sessions_lost: lost },
      ok: (lost === 0 || lost === null) && pn1 + pn2 > 0 && ln1 + ln2 > 0 && ps !== null
    }
  }
}
