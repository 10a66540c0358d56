// Leader election: three candidates; an observer prints each leader; the leader crashes
// (its lease is revoked) and the next candidate takes over.
import { connectOrStart, say, sleep } from './common.mjs'

const { client, close } = await connectOrStart()
const election = client.election('scheduler', { ttl: 3 })

const observer = (async () => {
  for await (const leader of election.observe()) {
    say(`observer: leader is ${leader ? `${leader.value} (rev ${leader.revision})` : 'nobody'}`)
  }
})()

const sessions = await Promise.all([1, 2, 3].map(() => client.session({ ttl: 3 })))
const campaigns = sessions.map((s, i) => s.election('scheduler').campaign(`node-${i + 1}`).then((l) => {
  say(`node-${i + 1} is the leader`)
  l.onLost((reason) => say(`node-${i + 1} lost leadership: ${reason}`))
  return [i, l]
}))

const [first, leadership] = await Promise.race(campaigns)
await leadership.proclaim(`node-${first + 1} (busy)`)
await sleep(300)
say(`node-${first + 1} crashes`)
await client.revokeLease(sessions[first].leaseId)
const [second, next] = await Promise.race(campaigns.filter((_, i) => i !== first))
await sleep(300)
say(`node-${second + 1} resigns`)
await next.resign()
await sleep(300)
await close() // resigns the rest and ends the observer
await observer
