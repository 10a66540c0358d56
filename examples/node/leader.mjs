// Leader loop: two loops compete for one election. The leader's work ticks through fenced
// writes until its term ends; here its lease is revoked (as an operator, an expiry or a
// partition would), its AbortSignal fires at once, and the other loop takes over with a
// higher fencing token.
import { connectOrStart, say, sleep } from './common.mjs'

const { client, close } = await connectOrStart()
const loops = ['node-1', 'node-2'].map((node) => {
  // A fresh session per term; one term each (requeue: false), so the example ends.
  const lp = client.leaderLoop('demo/scheduler', node, { ttl: 10, requeue: false })
  lp.start(async (leadership, signal) => {
    say(`${node} leads (fencing token ${leadership.fencingToken})`)
    const aborted = new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }))
    let tick = 0
    while (!signal.aborted) {
      tick++
      await leadership.put('demo/scheduler-tick', `${node} tick ${tick}`) // fenced
      await Promise.race([sleep(300), aborted])
    }
    say(`${node}: work stopped (${signal.reason?.reason ?? 'aborted'})`)
  })
  return lp
})

const leaderOf = async (not) => {
  for (let i = 0; i < 1500; i++) {
    const lp = loops.find((l) => l !== not && l.leadership)
    if (lp) return lp
    await sleep(20)
  }
  throw new Error('no loop became leader within 30 s')
}

const first = await leaderOf(null)
await sleep(1000)
const lease = first.leadership.leaseId
say(`revoking the leader's lease ${lease.toString(16)}`)
await client.revokeLease(lease)
const second = await leaderOf(first)
say(`the other loop leads now (fencing token ${second.leadership.fencingToken})`)
await sleep(700)
for (const lp of loops) await lp.close()
say(`last tick: ${await client.getString('demo/scheduler-tick')}`)
await close()
