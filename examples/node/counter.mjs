// Atomic counter: four tasks count visits at once, none is lost; compare-and-set resets it.
import { connectOrStart, say } from './common.mjs'

const { client, close } = await connectOrStart()
const visits = client.counter('demo/visits')
await visits.set(0)
// Each add is a compare-and-swap, retried on conflict.
await Promise.all(Array.from({ length: 4 }, async () => { for (let i = 0; i < 25; i++) await visits.add(1) }))
say(`visits: ${await visits.get()}`)
say(`reset from 100: ${await visits.compareAndSet(100, 0)}`)
say(`reset from 100 again: ${await visits.compareAndSet(100, 0)}`)
say(`after 5 more: ${await visits.add(5)}`)
await close()
