// Nemesis worker (Node face): the same protocol as worker.py.
// Usage: node worker.mjs ENDPOINTS NAME SECONDS
import { Client } from '../../bindings-node/index.mjs'

const [endpoints, name, seconds] = [process.argv[2].split(','), process.argv[3], Number(process.argv[4])]
let stop = false
process.on('SIGTERM', () => { stop = true })
const deadline = Date.now() + seconds * 1000
const client = await Client.connect({ endpoints, connectTimeoutMs: 10000 })
const lock = client.lock('nemesis/lock', { ttl: 3 })
while (!stop && Date.now() < deadline) {
  const t0 = performance.now()
  const rec = { w: name }
  let guard
  try {
    guard = await lock.acquire({ timeoutMs: 10000 })
    const raw = await client.get('nemesis/counter')
    const [n, token] = (raw ? raw.toString() : '0 0').split(' ').map(Number)
    rec.t = guard.fencingToken
    rec.n = n + 1
    if (guard.fencingToken <= token) rec.violation = `token ${guard.fencingToken} not above stored ${token}`
    try {
      await guard.put('nemesis/counter', `${n + 1} ${guard.fencingToken}`)
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
    if (guard) await guard.release().catch(() => {})
  }
  rec.ms = Math.round((performance.now() - t0) * 100) / 100
  process.stdout.write(JSON.stringify(rec) + '\n')
}
await client.close()
