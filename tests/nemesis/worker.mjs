// Nemesis worker (Node face): the same protocol as worker.py.
// Usage: node worker.mjs ENDPOINTS NAME SECONDS [lock|elect]
import { Client } from '../../bindings-node/index.mjs'

const [endpoints, name, seconds] = [process.argv[2].split(','), process.argv[3], Number(process.argv[4])]
const mode = process.argv[5] ?? 'lock'
const counter = mode === 'lock' ? 'nemesis/counter' : 'nemesis/leader-counter'
let stop = false
process.on('SIGTERM', () => { stop = true })
const deadline = Date.now() + seconds * 1000
const client = await Client.connect({ endpoints, connectTimeoutMs: 10000 })
const lock = client.lock('nemesis/lock', { ttl: 3 })
const election = client.election('nemesis/election', { ttl: 3 })
while (!stop && Date.now() < deadline) {
  const t0 = performance.now()
  const rec = { w: name }
  let guard
  try {
    guard = mode === 'lock' ? await lock.acquire({ timeoutMs: 10000 }) : await election.campaign(name, { timeoutMs: 10000 })
    const token = guard.fencingToken
    const raw = await client.get(counter)
    const [n, stored] = (raw ? raw.toString() : '0 0').split(' ').map(Number)
    rec.t = token
    rec.n = n + 1
    if (token <= stored) rec.violation = `token ${token} not above stored ${stored}`
    try {
      await guard.put(counter, `${n + 1} ${token}`)
      rec.r = 'ok'
    } catch (e) {
      if (e.code === 'FENCED') rec.r = 'fenced'
      else if (e.code === 'UNKNOWN_OUTCOME') rec.r = 'unknown'
      else throw e
    }
  } catch (e) {
    rec.r ??= 'error'
    rec.k = e.code ?? String(e)
  } finally {
    if (guard) await (mode === 'lock' ? guard.release() : guard.resign()).catch(() => {})
  }
  rec.ms = Math.round((performance.now() - t0) * 100) / 100
  process.stdout.write(JSON.stringify(rec) + '\n')
}
await client.close()
