// The Node API in TypeScript; `tsc --strict` checks it (bindings-node/test.sh).
//   npx tsc -p bindings-node/tsconfig.json   (type-check only)
import {
  Client, type ConnectOptions, type ConfigChange, type Instance, type InstanceEvent, type InstanceSets,
  type LeaderInfo, type LeaderObserver, type LockGuard, type Session, type TxnOp,
} from 'etcd-recipes'
import { EtcdCluster } from 'etcd-recipes/testing'

async function keepAlive(session: Session): Promise<string | null> {
  session.onLost((reason: string) => console.error(`session lost: ${reason}`))
  return session.lost() // the reason of a loss, or null once closed
}

async function withLock(client: Client): Promise<number> {
  const lock = client.lock('jobs/report', { ttl: 10 })
  await using guard: LockGuard = await lock.acquire({ timeoutMs: 5000 })
  guard.onLost((reason) => console.error(`lock lost: ${reason}`))
  const token: number = guard.fencingToken
  await guard.put('jobs/last-owner', `token ${token}`)
  const ops: TxnOp[] = [{ kind: 'put', key: 'jobs/a', value: '1' }, { kind: 'delete', key: 'jobs/b' }]
  await guard.txn(ops)
  const lease: bigint = guard.leaseId
  console.log(`lock ${guard.name} on lease ${lease.toString(16)}`)
  return token
}

async function lead(client: Client): Promise<void> {
  const election = client.election('scheduler', { ttl: 5 })
  await using leadership = await election.campaign('node-1', { timeoutMs: 5000 })
  await leadership.proclaim('node-1 (ready)')
  const current: LeaderInfo | null = await client.leader('scheduler')
  const value: Buffer | undefined = current?.value
  console.log(`leader ${current?.valueString} (${value?.length} bytes) token ${current?.fencingToken} leader=${leadership.isLeader}`)
  const observer: LeaderObserver = election.observe()
  for await (const leader of observer) {
    console.log(`observed ${leader?.valueString ?? 'nobody'}`)
    break // stops the watch
  }
  const first: IteratorResult<LeaderInfo | null, undefined> = await client.observeLeader('scheduler').next()
  console.log(`first leader ${first.done ? '(ended)' : first.value?.valueString}`)
}

async function serve(client: Client): Promise<void> {
  await using reg = await client.register({ service: 'billing', id: 'b-1', addr: '127.0.0.1:8080', metadata: { zone: 'a' } })
  reg.onStateChange((state: 'registered' | 'recovering' | 'lost' | 'closed') => console.log(`registration ${state}`))
  await using view = await client.discover('billing', { picker: 'sticky', preferZone: 'a' })
  const all: Instance[] = view.instances()
  const next: Instance | null = view.pick((i) => i.readiness === 'ready')
  console.log(`${all.length} instances; next ${next?.addr}`)
  for await (const instances of view) {
    console.log(`now ${instances.map((i) => i.id).join(',')}`)
    break
  }
  const updates: InstanceSets = view.updates()
  const step = await updates.next()
  if (!step.done) console.log(`updates start with ${step.value.length}`)
  await updates.return()
  const events = view.events() // subscribed now
  const pendingEvent = events.next()
  await reg.updateMetadata({ zone: 'b' })
  const event = await pendingEvent
  if (!event.done) {
    const e: InstanceEvent = event.value
    console.log(`event ${e.kind} ${e.id}`)
  }
  await events.return()
}

async function configure(client: Client): Promise<void> {
  await client.put('app/feature', JSON.stringify({ enabled: true }))
  await using cfg = await client.config('app/feature')
  const raw: Buffer | null = cfg.get()
  const text: string | null = cfg.getString()
  const flags = cfg.getJson() as { enabled: boolean } | null
  console.log(raw?.length, text, flags?.enabled)
  const changes = cfg.changes()
  await client.put('app/feature', JSON.stringify({ enabled: false }))
  for await (const change of changes) {
    const c: ConfigChange = change
    console.log(`${c.key}: ${c.deleted ? '(deleted)' : c.new?.toString()} at ${c.revision}`)
    break
  }
}

export async function main(): Promise<void> {
  await using etcd = await EtcdCluster.start({ members: 1 })
  const options: ConnectOptions = { endpoints: etcd.endpoints, namespace: 'typed/', connectTimeoutMs: 2000 }
  await using client = await Client.connect(options)
  const rev: number = await client.put('greeting', 'hello')
  const value: Buffer | null = await client.get('greeting')
  console.log(`rev ${rev}: ${value?.toString() ?? '(none)'}`)
  await using session = await client.session({ ttl: 5 })
  const lease: bigint = session.leaseId
  console.log(`lease ${session.leaseIdHex} (${lease}) alive=${session.isAlive}`)
  const lost = keepAlive(session)
  console.log(`fencing token ${await withLock(client)}`)
  await lead(client)
  await serve(client)
  await configure(client)
  await session.close()
  console.log(`ended: ${(await lost) ?? 'session closed'}`)
  try {
    await client.session({ ttl: 0 })
  } catch (e) {
    if (e instanceof TypeError && (e as NodeJS.ErrnoException).code === 'INVALID_ARGUMENT') console.log('typed error ok')
  }
}

await main()
