// Shared by the examples: connect to $ETCD_ENDPOINTS, or start a throwaway local etcd.
import { Client } from 'etcd-recipes'
import { EtcdCluster } from 'etcd-recipes/testing'

export async function connectOrStart (namespace = 'examples/') {
  let etcd = null
  let endpoints = process.env.ETCD_ENDPOINTS?.split(',').filter(Boolean)
  if (!endpoints?.length) {
    etcd = await EtcdCluster.start()
    endpoints = etcd.endpoints
    say(`started a throwaway etcd at ${endpoints.join(', ')}`)
  }
  const client = await Client.connect({ endpoints, namespace })
  return {
    client,
    etcd,
    async close () {
      await client.close()
      await etcd?.close()
    },
  }
}

export function say (msg) {
  console.log(`[${process.argv[1].split('/').pop()}] ${msg}`)
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Poll `cond()` until it holds; throw after `ms` (watches deliver asynchronously). */
export async function waitFor (cond, what, ms = 20_000) {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`gave up after ${ms} ms waiting for ${what}`)
    await sleep(20)
  }
}
