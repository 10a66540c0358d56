// Queues: a FIFO job queue shared by two consumers, a consumer woken by a new item, and a
// priority queue (lower number first). Items are handed out at most once: for redelivery
// after a crash, use the work queue (workqueue.mjs).
import { connectOrStart, say, sleep } from './common.mjs'

const { client, close } = await connectOrStart()
const jobs = client.queue('demo/jobs')
for (let i = 1; i <= 6; i++) await jobs.enqueue(`job-${i}`)
say(`enqueued 6 jobs; length: ${await jobs.length()}`)

const taken = []
async function consumer (name) {
  for (let item; (item = await jobs.tryDequeue()) !== null;) { // null: the queue is empty
    taken.push(item.valueString)
    say(`${name} took ${item.valueString}`)
    await sleep(10)
  }
}
await Promise.all([consumer('consumer-1'), consumer('consumer-2')])
say(`each job went to exactly one consumer: ${taken.length} taken, ${new Set(taken).size} distinct, length now ${await jobs.length()}`)

// A consumer of an empty queue waits (up to its timeout) and wakes on the next item.
const waiting = jobs.dequeue({ timeoutMs: 10_000 })
await sleep(200) // let it start waiting (a window, not an assertion)
await jobs.enqueue('job-7')
say(`a waiting consumer woke up with ${(await waiting).valueString}`)
try {
  await jobs.dequeue({ timeoutMs: 200 })
} catch (e) {
  say(`dequeue on an empty queue gives up: ${e.code}`)
}

// Priority queue: lower number first, FIFO within one priority.
const tasks = client.priorityQueue('demo/tasks')
for (const [value, priority] of [['weekly digest', 100], ['page on-call', 0], ['rotate logs', 10], ['patch openssl', 0], ['resize images', 10]]) {
  await tasks.enqueue(value, priority)
  say(`enqueued '${value}' with priority ${priority}`)
}
const order = []
for (let i = 0; i < 5; i++) order.push((await tasks.dequeue({ timeoutMs: 5000 })).valueString)
say(`dequeued in order: ${order.join(', ')}`)
await close()
