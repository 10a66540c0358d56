// Leader election: three candidates; an observer prints each leader; the leader crashes
// (its lease is revoked) and the next candidate takes over.
import { connectOrStart, say, waitFor } from './common.mjs'

const { client, close } = await connectOrStart()
const election = client.election('scheduler', { ttl: 3 })

let observed = null // the value of the leader the observer printed last
const observer = (async () => {
  for await (const leader of election.observe()) {
    say(`observer: leader is ${leader ? `${leader.valueString} (fencing token ${leader.fencingToken})` : 'nobody'}`)
    observed = leader?.valueString ?? null
  }
})()

const sessions = await Promise.all([1, 2, 3].map(() => client.session({ ttl: 3 })))
const campaigns = sessions.map((s, i) => s.election('scheduler').campaign(`node-${i + 1}`).then((l) => {
  say(`node-${i + 1} is the leader`)
  // lost() resolves when leadership ends: with the reason if it was lost, with null on a
  // resign or close (onLost(callback) is the callback form, for a loss only).
  const lost = l.lost().then((reason) => say(`node-${i + 1} ${reason ? `lost leadership: ${reason}` : 'stepped down'}`))
  return [i, l, lost]
}))

const [first, leadership, firstLost] = await Promise.race(campaigns)
await leadership.proclaim(`node-${first + 1} (busy)`)
await waitFor(() => observed === `node-${first + 1} (busy)`, 'the observer to see the new value')
say(`node-${first + 1} crashes`)
await client.revokeLease(sessions[first].leaseId)
await firstLost // it notices: its key is gone with the lease
const [second, next] = await Promise.race(campaigns.filter((_, i) => i !== first))
await waitFor(() => observed === `node-${second + 1}`, 'the observer to see the new leader')
say(`node-${second + 1} resigns`)
await next.resign()
const third = 3 - first - second
await waitFor(() => observed === `node-${third + 1}`, 'the observer to see the last leader')
await close() // resigns the rest and ends the observer
await observer
