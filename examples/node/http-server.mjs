// An HTTP service wired to etcd at startup and shutdown:
//  - startup: connect, serve, register `web/<id>` in the registry, campaign for leadership
//    of `web-leader` in the background (the leader runs the periodic job);
//  - SIGTERM/SIGINT: stop accepting requests, resign leadership, deregister, close, exit 0.
//
//   PORT=8080 INSTANCE_ID=web-1 node examples/node/http-server.mjs
//   curl localhost:8080/   ;  kill -TERM <pid>
import http from 'node:http'
import { connectOrStart, say } from './common.mjs'

const id = process.env.INSTANCE_ID ?? `web-${process.pid}`
const { client, close } = await connectOrStart('examples/')

let leadership = null
let ticks = 0
const peers = await client.discover('web')

const server = http.createServer((req, res) => {
  res.setHeader('content-type', 'application/json')
  res.end(JSON.stringify({
    id,
    leader: leadership?.isLeader ?? false,
    peers: peers.instances().map((i) => i.id),
    ticks,
  }) + '\n')
})
await new Promise((resolve) => server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', resolve))
const addr = `127.0.0.1:${server.address().port}`

const registration = await client.register({ service: 'web', id, addr, metadata: { pid: process.pid }, ttl: 5 })
registration.onStateChange((state) => say(`registration ${state}`))
say(`serving on http://${addr}, registered as ${registration.key}`)

const election = client.election('web-leader', { ttl: 5 })
const campaign = (async () => {
  try {
    leadership = await election.campaign(id)
  } catch (e) {
    if (e.code !== 'CLOSED') say(`campaign failed: ${e.code} ${e.message}`)
    return
  }
  say('elected leader: running the periodic job')
  const job = setInterval(async () => {
    try {
      await leadership.put('web/last-job', `${id} ${new Date().toISOString()}`) // fenced
      ticks++
    } catch (e) {
      say(`job write refused: ${e.code}`)
    }
  }, 500)
  job.unref()
  const reason = await leadership.lost() // null: resigned (at shutdown)
  clearInterval(job)
  say(`no longer leader: ${reason ?? 'resigned'}`)
})()

let stopping = false
async function shutdown (signal) {
  if (stopping) return
  stopping = true
  say(`${signal}: shutting down`)
  server.close() // stop accepting; in-flight requests finish
  if (leadership) await leadership.resign()
  await registration.close() // deregister: discovery drops us at once
  say('resigned and deregistered')
  await close() // also ends a campaign still waiting
  await campaign
  say('bye')
}
process.once('SIGTERM', () => shutdown('SIGTERM'))
process.once('SIGINT', () => shutdown('SIGINT'))
if (process.send) process.send({ ready: addr })
