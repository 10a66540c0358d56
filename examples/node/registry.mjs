// Service registry: three instances of `billing` register themselves; a client discovers
// them, picks round-robin, and watches one leave and one heal after losing its lease.
import { connectOrStart, say, sleep, waitFor } from './common.mjs'

const { client, close } = await connectOrStart()

const view = await client.discover('billing')
const seen = new Set() // every event printed, as "kind id"
const events = (async () => {
  for await (const e of view.events()) {
    say(`discovery: ${e.kind} ${e.id}${e.instance ? ` at ${e.instance.addr}` : ''}`)
    seen.add(`${e.kind} ${e.id}`)
  }
})()

const regs = []
for (const [i, port] of [[1, 8081], [2, 8082], [3, 8083]]) {
  regs.push(await client.register({ service: 'billing', id: `billing-${i}`, addr: `127.0.0.1:${port}`, metadata: { zone: i % 2 ? 'a' : 'b' }, ttl: 5 }))
}
// The view follows a watch: it sees the registrations a moment after they are written.
await waitFor(() => view.instances().length === 3, 'discovery to see all three')
say(`instances now: ${view.instances().map((i) => i.id).join(', ')}`)
for (let n = 0; n < 4; n++) say(`round-robin pick: ${view.pickRoundRobin()?.addr}`)

await regs[1].updateMetadata({ zone: 'b', weight: 2 })
await regs[2].close()
await waitFor(() => seen.has('down billing-3'), 'discovery to report billing-3 down')
say('billing-3 deregistered')

regs[0].onStateChange((state) => say(`billing-1 registration is ${state}`))
await client.revokeLease(regs[0].leaseId) // an operator (or an etcd restart) kills its lease
await waitFor(() => regs[0].reregistrations >= 1 && regs[0].state === 'registered', 'billing-1 to re-register')
say(`billing-1 healed itself with a new lease (${regs[0].reregistrations} re-registration)`)
await sleep(200)
say(`instances now: ${view.instances().map((i) => `${i.id}@${i.addr}`).join(', ')}`)

await close() // deregisters everything and ends the event stream
await events
