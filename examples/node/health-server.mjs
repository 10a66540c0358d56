// Readiness and metrics over node:http for a service that coordinates through etcd.
//  - GET /healthz: the process is up (liveness; never looks at etcd);
//  - GET /readyz: client.health(): 200 when every session is alive, every view current and
//    the registration in place, else 503 with the problems (readiness);
//  - GET /metrics: this process's etcd-recipes metrics in the Prometheus text format
//    (metricsText(); a Prometheus server scrapes it as is);
//  - GET /metrics.json: the same as a plain snapshot object (metricsSnapshot()).
//
//   node examples/node/health-server.mjs           # serve, query itself, show a fault, exit
//   PORT=9100 SERVE=1 node examples/node/health-server.mjs   # serve until Ctrl-C
import http from 'node:http'
import { metricsSnapshot, metricsText } from 'etcd-recipes'
import { connectOrStart, say } from './common.mjs'

const { client, close } = await connectOrStart('examples/')
const session = await client.session({ ttl: 5 })
await client.put('health-demo/config/greeting', 'hello')
const view = await client.config('health-demo/config/', { prefix: true })
const registration = await client.register({ service: 'health-demo', id: 'api-1', addr: '127.0.0.1:8080', ttl: 5 })

const server = http.createServer((req, res) => {
  const reply = (status, type, body) => {
    res.writeHead(status, { 'content-type': type })
    res.end(body)
  }
  switch (req.url) {
    case '/healthz':
      return reply(200, 'application/json', '{"alive":true}\n')
    case '/readyz': {
      const h = client.health()
      const body = { ready: h.healthy, sessionsAlive: h.sessionsAlive, viewsCurrent: h.viewsCurrent, problems: h.problems }
      return reply(h.healthy ? 200 : 503, 'application/json', JSON.stringify(body) + '\n')
    }
    case '/metrics':
      return reply(200, 'text/plain; version=0.0.4', metricsText())
    case '/metrics.json':
      return reply(200, 'application/json', JSON.stringify(metricsSnapshot()) + '\n')
    default:
      return reply(404, 'text/plain', 'not found\n')
  }
})
await new Promise((resolve) => server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', resolve))
const base = `http://127.0.0.1:${server.address().port}`
say(`serving ${base}/readyz and ${base}/metrics`)

const get = async (path) => {
  const r = await fetch(base + path)
  return [r.status, await r.text()]
}

async function shutdown () {
  server.close()
  await registration.close()
  view.close()
  await session.close()
  await close()
}

if (process.env.SERVE) {
  for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => shutdown().then(() => process.exit(0)))
} else {
  let [status, body] = await get('/healthz')
  say(`GET /healthz -> ${status}`)
  ;[status, body] = await get('/readyz')
  say(`GET /readyz -> ${status} ${body.trim()}`)
  ;[status, body] = await get('/metrics')
  say(`GET /metrics -> ${status}, ${body.split('\n').filter((l) => l.startsWith('# TYPE')).length} metric families`)
  ;[status, body] = await get('/metrics.json')
  say(`GET /metrics.json -> ${status}, families: ${JSON.parse(body).map((f) => f.name).slice(0, 3).join(', ')}, ...`)

  // An etcd-side fault: the session's lease is revoked; the session says so at once.
  await client.revokeLease(session.leaseId)
  await session.lost()
  ;[status, body] = await get('/readyz')
  say(`after the lease was revoked: GET /readyz -> ${status} ${JSON.stringify(JSON.parse(body).problems)}`)
  const losses = metricsText().split('\n').find((l) => l.startsWith('etcd_recipes_session_losses_total'))
  say(`metrics: ${losses}`)
  await shutdown()
  say('done')
}
