// Local config reads from Node: ConfigView reads vs a plain Map fed by a watch.
//   node bindings-node/bench/config_reads.mjs            (starts a throwaway etcd)
//   ETCD_ENDPOINTS=127.0.0.1:2379 node bindings-node/bench/config_reads.mjs
// Prints one JSON line. A measurement, not a test.
import { Client } from 'etcd-recipes'
import { EtcdCluster } from 'etcd-recipes/testing'

const READS = Number(process.env.READS ?? 2_000_000)
const KEYS = 100

const etcd = process.env.ETCD_ENDPOINTS ? null : await EtcdCluster.start()
const endpoints = process.env.ETCD_ENDPOINTS?.split(',') ?? etcd.endpoints
const client = await Client.connect({ endpoints, namespace: `bench-${process.pid}/` })
for (let i = 0; i < KEYS; i++) await client.put(`cfg/k${i}`, JSON.stringify({ i, pad: 'x'.repeat(32) }))

const view = await client.config('cfg/', { prefix: true })
const keys = Array.from({ length: KEYS }, (_, i) => `cfg/k${i}`)

// Baseline: a Map kept up to date from the view's change stream (a hand-rolled
// watch-fed cache), read with Map.get.
const map = new Map(Object.entries(view.snapshot().values).map(([k, v]) => [k, v.toString()]))
const feeding = (async () => {
  for await (const c of view.changes()) c.new === null ? map.delete(c.key) : map.set(c.key, c.new.toString())
})()

function measure (name, read) {
  let sink = 0
  for (let i = 0; i < 50_000; i++) sink += read(keys[i % KEYS]) ? 1 : 0 // warm-up
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < READS; i++) sink += read(keys[i % KEYS]) ? 1 : 0
  const ns = Number(process.hrtime.bigint() - t0)
  if (sink !== READS + 50_000) throw new Error(`${name}: a read missed`)
  return { reads_per_s: Math.round(READS / (ns / 1e9)), ns_per_read: +(ns / READS).toFixed(1) }
}

const result = {
  bench: 'node_config_local_reads',
  reads: READS,
  keys: KEYS,
  view_getString: measure('getString', (k) => view.getString(k)),
  view_get_buffer: measure('get', (k) => view.get(k)),
  view_getJson: measure('getJson', (k) => view.getJson(k) === null ? null : 1),
  map_fed_by_watch: measure('map', (k) => map.get(k)),
}
result.target_met = result.view_getString.reads_per_s >= 1_000_000
console.log(JSON.stringify(result))
await client.close()
await feeding
await etcd?.close()
