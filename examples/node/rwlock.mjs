// Read-write lock: readers share a catalog, a writer updates it alone. Same keys as etcd's
// Go recipe.RWMutex, so Go readers and writers share the lock.
import { connectOrStart, say } from './common.mjs'

const { client, close } = await connectOrStart()
// Keep data outside the lock's prefix (`demo/catalog/`): a key there counts as a holder.
await client.put('demo/catalog-version', '1')
const rw = client.rwlock('demo/catalog', { ttl: 10, timeoutMs: 30_000 })
const r1 = await rw.read()
const r2 = await rw.read()
say('two readers hold the lock together')
try {
  await rw.tryWrite()
} catch (e) {
  say(`a writer has to wait: ${e.code}`)
}
const writing = rw.write()
await r1.release()
await r2.release()
const w = await writing
await w.put('demo/catalog-version', '2') // only while we hold the lock
say(`the writer updated the catalog (fencing token ${w.fencingToken})`)
await w.release()
const r = await rw.read()
say(`a reader sees version ${await client.getString('demo/catalog-version')}`)
await r.release()
await close()
