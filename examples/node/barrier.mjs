// Barriers: a gate holds three workers until a coordinator opens it; a double barrier
// makes three parties start together and finish together.
import { connectOrStart, say, sleep } from './common.mjs'

const { client, close } = await connectOrStart()

// Barrier: one key. While it exists, wait() blocks; deleting it lets everyone go.
const gate = client.barrier('demo/deploy-gate')
say(`gate held: ${await gate.hold()}`)
let passed = 0
const workers = [1, 2, 3].map(async (i) => {
  say(`worker-${i} waits at the gate`)
  await gate.wait({ timeoutMs: 30_000 })
  passed++
  say(`worker-${i} passes the gate`)
})
await sleep(200) // let them reach the gate (a window, not an assertion)
try {
  await gate.wait({ timeoutMs: 200 })
} catch (e) {
  say(`a wait with a short timeout gives up: ${e.code}`)
}
say(`still waiting at the gate: ${3 - passed}`)
say('coordinator releases the gate')
await gate.release()
await Promise.all(workers)
await gate.wait({ timeoutMs: 1000 }) // returns at once: nothing holds the gate
say(`gate held now: ${await gate.isHeld()}`)

// Double barrier for 3 parties: enter() returns once all 3 are in, leave() once all 3
// are out. Each party's key lives on its own lease (10 s): a party that dies frees its
// place instead of blocking the others forever.
const parties = [0, 1, 2].map(() => client.doubleBarrier('demo/batch', 3, { ttl: 10, timeoutMs: 30_000 }))
const entered = await Promise.all(parties.map(async (party, i) => {
  await sleep(150 * i) // parties arrive at different times
  say(`party-${i + 1} arrives`)
  await party.enter()
  return performance.now()
}))
const spread = Math.max(...entered) - Math.min(...entered)
say(`all 3 entered; they started within ${spread.toFixed(0)} ms of each other (arrivals were 300 ms apart)`)

try {
  await client.doubleBarrier('demo/batch', 3, { ttl: 10 }).enter({ timeoutMs: 5000 })
} catch (e) {
  say(`a fourth party is turned away, the barrier is full: ${e.code}`)
}

await Promise.all(parties.map(async (party, i) => {
  const ms = 100 + 200 * i
  await sleep(ms)
  say(`party-${i + 1} finished its work after ${ms} ms and waits for the others to leave`)
  await party.leave()
  say(`party-${i + 1} left`)
}))
say('all 3 left together: done')
await close()
