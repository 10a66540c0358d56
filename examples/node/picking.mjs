// Client-side load balancing over discovered instances: three instances of `pay` register
// on one session (they live and die with it) with a zone and a weight in their metadata;
// views pick round robin, weighted, zone-first and sticky; errors noted against an
// instance take it out for a while; a draining instance is not picked; closing the
// session removes all three.
import { connectOrStart, say, waitFor } from './common.mjs'

const { client, close } = await connectOrStart()
const picks = (view, n) => Array.from({ length: n }, () => view.pick()?.id ?? '-')

const session = await client.session({ ttl: 10 })
const regs = []
for (const [n, zone, weight] of [[1, 'a', 1], [2, 'a', 3], [3, 'b', 1]]) {
  regs.push(await session.register({ service: 'pay', id: `pay-${n}`, addr: `10.0.1.${n}:9000`, metadata: { zone, weight } }))
}
say(`registered ${regs.length} instances on lease ${session.leaseIdHex}`)

const rr = await client.discover('pay')
await waitFor(() => rr.instances().length === 3, 'three instances')
say(`round robin: ${picks(rr, 6).join(', ')}`)

const weighted = await client.discover('pay', { picker: 'weighted' })
const counts = {}
for (const id of picks(weighted, 5000)) counts[id] = (counts[id] ?? 0) + 1
const top = Object.entries(counts).sort((x, y) => y[1] - x[1])[0][0]
say(`weighted: pay-2 (weight 3) got the most picks: ${top === 'pay-2'}`)

const local = await client.discover('pay', { preferZone: 'b' })
say(`zone b first: ${[...new Set(picks(local, 4))].join(', ')}`)

const sticky = await client.discover('pay', { picker: 'sticky' })
say(`sticky: ${[...new Set(picks(sticky, 5))].join(', ')}`)

const flaky = await client.discover('pay', { downThreshold: 2, downPeriodMs: 1000 })
flaky.noteError('pay-1')
flaky.noteError('pay-1')
say(`pay-1 after 2 errors: down=${flaky.isDown('pay-1')}, picks ${[...new Set(picks(flaky, 6))].sort().join(', ')}`)
await waitFor(() => !flaky.isDown('pay-1'), 'pay-1 back')
say('pay-1 is back after its down period')

say(`a pick filtered to zone a: ${rr.pick((i) => i.metadata.zone === 'a')?.id}`)

await regs[1].setReadiness('draining')
await waitFor(() => rr.available().length === 2, 'pay-2 out of the picks')
say(`pay-2 draining: listed ${rr.instances().length}, available ${rr.available().map((i) => i.id).join(', ')}`)

await session.close() // every registration on it goes with it
await waitFor(() => rr.instances().length === 0, 'all gone')
say(`session closed: pay has ${rr.instances().length} instances; pay-1 is ${regs[0].state}`)
await close()
