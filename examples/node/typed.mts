// A TypeScript service skeleton; type-checked with `tsc --strict` by bindings-node/test.sh.
//   npx tsx examples/node/typed.mts   (or compile with tsc)
import { Client, type ConnectOptions, type Session } from 'etcd-recipes'
import { EtcdCluster } from 'etcd-recipes/testing'

async function keepAlive(session: Session): Promise<string> {
  session.onLost((reason: string) => console.error(`session lost: ${reason}`))
  return session.lost()
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
  await session.close()
  console.log(`ended: ${await lost}`)
  try {
    await client.session({ ttl: 0 })
  } catch (e) {
    if (e instanceof TypeError && (e as NodeJS.ErrnoException).code === 'INVALID_ARGUMENT') console.log('typed error ok')
  }
}

await main()
