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
