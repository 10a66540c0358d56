// Config cache: a view of `app/` kept in sync with etcd. Reads are local and synchronous;
// changes arrive as an async iterator.
import { connectOrStart, say } from './common.mjs'

const until = async (pred) => { while (!pred()) await new Promise((resolve) => setTimeout(resolve, 5)) }

const { client, close } = await connectOrStart()
await client.put('app/feature-x', JSON.stringify({ enabled: false, rollout: 0 }))
await client.put('app/greeting', 'hello')

say(`connection: ${client.connectionState}`)
const cfg = await client.config('app/', { prefix: true })
say(`loaded ${cfg.keys().length} keys at revision ${cfg.revision}`)
say(`greeting = ${cfg.getString('app/greeting')}, feature-x = ${JSON.stringify(cfg.getJson('app/feature-x'))}`)

// Typed reads: a validator turns the JSON into your type and throws on bad input (the
// throw becomes code DECODE naming the key); absent keys give the default.
const rollout = (v) => {
  if (typeof v?.rollout !== 'number' || v.rollout < 0 || v.rollout > 100) throw new RangeError('rollout must be 0..100')
  return { enabled: Boolean(v.enabled), rollout: v.rollout }
}
say(`feature-x validated = ${JSON.stringify(cfg.getJson('app/feature-x', { validate: rollout }))}`)
say(`timeout = ${cfg.getJson('app/timeout-ms', { default: 2500 })}`)
await client.put('app/feature-y', JSON.stringify({ rollout: 400 }))
await until(() => cfg.has('app/feature-y'))
try {
  cfg.getJson('app/feature-y', { validate: rollout })
} catch (e) {
  say(`refused: ${e.code} ${e.key}: ${e.cause.message}`)
}

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
const snap = cfg.snapshot()
say(`snapshot at revision ${snap.revision}: ${Object.keys(snap.values).sort().join(', ')}`)

let on = 0
const t0 = performance.now()
for (let i = 0; i < 1_000_000; i++) if (cfg.getJson('app/feature-x')?.enabled) on++
say(`1M local JSON reads in ${(performance.now() - t0).toFixed(0)} ms (feature on in ${on})`)
await close()
