"""The connection state from Python: a client that knows one member of three sees that
member paused (SUSPENDED), resumed (RECONNECTED), killed with a session on it (SUSPENDED,
then LOST when the session expires) and started again (RECONNECTED)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import etcd_recipes
from etcd_recipes.testing import EtcdCluster

from waiting import EVENTUALLY


def state_of(client: etcd_recipes.Client) -> str:
    """The state now (a call, so that the type checker does not carry one read to the next)."""
    return client.connection_state


async def test_connection_states_follow_a_paused_and_a_killed_member(etcd_factory: Callable[..., EtcdCluster]) -> None:
    cluster = etcd_factory(3)
    client = await etcd_recipes.Client.connect([cluster.endpoints[0]])
    states = client.connection_states()
    seen: list[str] = []

    async def expect(state: str, timeout: float = EVENTUALLY) -> None:
        try:
            got = await asyncio.wait_for(states.__anext__(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"no state change within {timeout} s; seen {seen}, waiting for {state}") from None
        seen.append(got)
        assert got == state, f"seen {seen}"

    await expect("CONNECTED")
    assert state_of(client) == "CONNECTED"
    health = client.endpoint_health()
    assert len(health) == 1 and health[0].serving and health[0].endpoint.endswith(cluster.endpoints[0].split("//")[-1])
    cluster.pause(0)
    await expect("SUSPENDED")
    assert state_of(client) == "SUSPENDED"
    cluster.resume(0)
    await expect("RECONNECTED")

    session = await client.session(ttl=2)
    cluster.kill(0)
    await expect("SUSPENDED")
    await expect("LOST")
    reason = await asyncio.wait_for(session.lost(), EVENTUALLY)
    assert reason is not None and "no renewal confirmed" in reason
    await asyncio.to_thread(cluster.start_member, 0)
    await expect("RECONNECTED", 40)
    assert state_of(client) == "RECONNECTED"

    await client.close()
    # The iteration ends with the client.
    rest = [s async for s in states]
    assert rest == [], f"after close: {rest}"
