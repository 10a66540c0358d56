// Distributed lock: four workers (each its own client, as if separate processes) take
// turns on `jobs/report`; each write is fenced, so a worker that lost the lock cannot write.
import { Client } from 'etcd-recipes'
import { connectOrStart, say, sleep } from './common.mjs'

const { client, etcd, close } = await connectOrStart()
const endpoints = etcd?.endpoints ?? process.env.ETCD_ENDPOINTS.split(',')

async function worker (name) {
  const c = await Client.connect({ endpoints, namespace: 'examples/' })
  const lock = c.lock('jobs/report', { ttl: 5 })
  for (let round = 0; round < 2; round++) {
    const guard = await lock.acquire({ timeoutMs: 30_000 })
    try {
      say(`${name} holds the lock (fencing token ${guard.fencingToken})`)
      // Keep data outside the lock's own prefix (`jobs/report/`): every key under it is a
      // contender, as in etcd's Go concurrency.Mutex.
      const runs = Number((await c.getString('jobs/report-runs')) ?? 0)
      await sleep(20)
      await guard.put('jobs/report-runs', String(runs + 1)) // only if still ours
    } finally {
      await guard.release()
    }
  }
  await c.close()
}

await client.delete('jobs/report-runs')
await Promise.all(['worker-1', 'worker-2', 'worker-3', 'worker-4'].map(worker))
say(`report ran ${await client.getString('jobs/report-runs')} times (expected 8: no lost updates)`)

try {
  const held = await client.lock('jobs/report').acquire()
  await client.lock('jobs/report').tryAcquire()
  await held.release()
} catch (e) {
  say(`tryAcquire while held: ${e.code}`)
}
await close()
