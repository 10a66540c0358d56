// Config cache: a view of `app/` kept in sync with etcd. Reads are local and synchronous;
// changes arrive as an async iterator.
import { connectOrStart, say } from './common.mjs'

const { client, close } = await connectOrStart()
await client.put('app/feature-x', JSON.stringify({ enabled: false, rollout: 0 }))
await client.put('app/greeting', 'hello')

const cfg = await client.config('app/', { prefix: true })
say(`loaded ${cfg.keys().length} keys at revision ${cfg.revision}`)
say(`greeting = ${cfg.getString('app/greeting')}, feature-x = ${JSON.stringify(cfg.getJson('app/feature-x'))}`)

const watcher = (async () => {
  for await (const c of cfg.changes()) {
    say(`change: ${c.key} ${c.old?.toString() ?? '(none)'} -> ${c.new?.toString() ?? '(deleted)'}`)
    if (c.key === 'app/greeting' && c.new === null) break // `break` stops the subscription
  }
})()

await client.put('app/feature-x', JSON.stringify({ enabled: true, rollout: 25 }))
await client.put('app/greeting', 'bonjour')
await client.delete('app/greeting')
await watcher

let on = 0
const t0 = performance.now()
for (let i = 0; i < 1_000_000; i++) if (cfg.getJson('app/feature-x')?.enabled) on++
say(`1M local JSON reads in ${(performance.now() - t0).toFixed(0)} ms (feature on in ${on})`)
await close()
