// Semaphore: six downloads share two permits, so at most two run at a time; each permit's
// writes are fenced (refused by etcd once the permit is not ours).
import { connectOrStart, say, sleep } from './common.mjs'

const { client, close } = await connectOrStart()
const sem = client.semaphore('demo/downloads', 2, { ttl: 10, timeoutMs: 30_000 })
let inside = 0
let most = 0
await Promise.all([0, 1, 2, 3, 4, 5].map(async (i) => {
  const permit = await sem.acquire()
  try {
    inside++
    most = Math.max(most, inside)
    await permit.put(`demo/downloaded/file-${i}`, String(permit.fencingToken)) // fenced
    await sleep(50)
    inside--
  } finally {
    await permit.release()
  }
}))
say(`6 downloads done, at most ${most} at a time`)

const first = await sem.acquire()
const second = await sem.acquire()
try {
  await sem.tryAcquire()
} catch (e) {
  say(`both permits taken: ${e.code}`)
}
await first.release()
await second.release()
await close()
