// The connection state from Node: a client that knows one member of three sees that member
// paused (SUSPENDED), resumed (RECONNECTED), killed with a session on it (SUSPENDED, then
// LOST when the session expires) and started again (RECONNECTED).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Client } from 'etcd-recipes'
import { EtcdCluster } from 'etcd-recipes/testing'
import { within } from '../testlib/helpers.mjs'

test('connection states follow a paused and a killed member', { timeout: 180000 }, async () => {
  const cluster = await EtcdCluster.start({ members: 3 })
  try {
    const client = await Client.connect({ endpoints: [cluster.endpoints[0]] })
    const states = client.connectionStates()
    const seen = []
    const expect = async (state, ms = 15000) => {
      const { value, done } = await within(states.next(), ms, `state ${state} (seen ${seen.join(', ')})`)
      assert.equal(done, false, `the stream ended; seen ${seen.join(', ')}`)
      seen.push(value)
      assert.equal(value, state, `seen ${seen.join(', ')}`)
    }
    await expect('CONNECTED')
    assert.equal(client.connectionState, 'CONNECTED')
    const health = client.endpointHealth()
    assert.equal(health.length, 1)
    assert.equal(health[0].serving, true)
    cluster.pause(0)
    await expect('SUSPENDED')
    assert.equal(client.connectionState, 'SUSPENDED')
    cluster.resume(0)
    await expect('RECONNECTED')

    const session = await client.session({ ttl: 2 })
    cluster.kill(0)
    await expect('SUSPENDED')
    await expect('LOST')
    const reason = await within(session.lost(), 15000, 'session lost')
    assert.match(reason, /no renewal confirmed/)
    await cluster.startMember(0)
    await expect('RECONNECTED', 40000)
    await client.close()
    const end = await within(states.next(), 15000, 'end after close')
    assert.equal(end.done, true)
  } finally {
    await cluster.close()
  }
})
