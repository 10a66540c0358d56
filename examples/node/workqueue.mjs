// Reliable work queue: two workers make thumbnails; a poison item fails on every attempt
// and is moved to the dead letters, then requeued; a delayed item waits for its time.
import { connectOrStart, say } from './common.mjs'

const { client, close } = await connectOrStart()
// Each delivery is claimed under a lease of its own (10 s): a worker that dies mid-item
// gives it back when its lease expires. Two failed deliveries: dead letter.
const queue = client.workQueue('demo/thumbnails', { ttl: 10, maxDeliveries: 2 })
for (const name of ['a.png', 'b.png', 'poison.png']) await queue.put(name)
await queue.put('later.png', { delayMs: 500 })

async function worker (name) {
  for (;;) {
    let item
    try {
      item = await queue.receive({ timeoutMs: 1500 })
    } catch (e) {
      if (e.code === 'LOCK_TIMEOUT') return // nothing more to do
      throw e
    }
    if (item.valueString === 'poison.png') {
      say(`${name} failed on ${item.valueString} (attempt ${item.deliveries})`)
      await item.nack()
      continue
    }
    say(`${name} made a thumbnail of ${item.valueString} (attempt ${item.deliveries})`)
    await item.ack() // rejects with code FENCED if our claim was lost meanwhile
  }
}

await Promise.all([worker('worker-1'), worker('worker-2')])
const dead = await queue.deadLetters()
say(`dead letters: ${dead.map((d) => `${d.valueString} x${d.deliveries}`).join(', ')}`)
say(`requeued: ${await queue.requeueAllDead()}`)
const item = await queue.receive({ timeoutMs: 5000 })
say(`${item.valueString} is back (attempt ${item.deliveries})`)
await item.ack()
say(`visible items left: ${await queue.length()}`)
await close()
