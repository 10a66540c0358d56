"""The reliable work queue and the atomic counter through the Python face, against a real etcd."""

from __future__ import annotations

import asyncio
import time

import pytest

import etcd_recipes
from etcd_recipes import Client
from etcd_recipes.testing import EtcdCluster

from waiting import EVENTUALLY, summary, wait_until


async def count(etcd: EtcdCluster, ns: str, prefix: str) -> int:
    """Keys under `prefix` (inside the test namespace), read by a raw client."""
    async with await Client.connect(etcd.endpoints, namespace=ns) as raw:
        view = await raw.config(prefix, prefix=True, reconcile_interval=None)
        try:
            return len(view.keys())
        finally:
            view.close()


async def test_producers_and_consumers_deliver_every_item_exactly_once(client: Client, etcd: EtcdCluster, ns: str) -> None:
    queue = client.work_queue("jobs")
    got: list[str] = []

    async def consumer() -> None:
        async with await client.session(ttl=10) as session:
            q = client.work_queue("jobs", session=session)
            while True:
                try:
                    item = await q.receive(timeout=2.0)
                except etcd_recipes.LockTimeoutError:
                    return
                assert item.deliveries == 1, f"{item.id} delivered again without a fault"
                got.append(item.value_string)
                await item.ack()

    async def producer(p: int) -> None:
        for i in range(30):
            await queue.put(f"{p}-{i}")

    await asyncio.gather(*(consumer() for _ in range(3)), *(producer(p) for p in range(2)))
    want = {f"{p}-{i}" for p in range(2) for i in range(30)}
    assert set(got) == want, f"missing: {sorted(want - set(got))[:5]}"
    assert len(got) == len(want), f"duplicates: {summary(sorted(got))}"
    assert await queue.length() == 0
    assert await count(etcd, ns, "jobs/") == 0


async def test_lease_revoked_mid_item_redelivers_and_fences_the_old_claimant(client: Client) -> None:
    queue = client.work_queue("work", ttl=10)
    item_id = await queue.put(b'{"img": 1}')
    first = await queue.receive()
    assert (first.id, first.deliveries, first.value_json()) == (item_id, 1, {"img": 1})
    lost: list[str] = []
    first.on_lost(lost.append)
    with pytest.raises(etcd_recipes.LockTimeoutError):
        await queue.try_receive()
    waiting = asyncio.ensure_future(queue.receive())
    await asyncio.sleep(0.2)  # a window for the receiver to start waiting
    await client.revoke_lease(first.lease_id)
    second = await asyncio.wait_for(waiting, EVENTUALLY)
    assert (second.id, second.deliveries) == (item_id, 2)
    assert second.fencing_token > first.fencing_token
    assert await asyncio.wait_for(first.lost(), EVENTUALLY) is not None
    await wait_until(lambda: bool(lost), "on_lost called")
    with pytest.raises(etcd_recipes.FencedError) as e:
        await first.ack()
    assert e.value.code == "FENCED"
    assert second.is_held
    await second.ack()
    assert await second.lost() is None


async def test_nack_dead_letters_and_requeue(client: Client) -> None:
    queue = client.work_queue("mail", max_deliveries=2)
    assert queue.max_deliveries == 2
    item_id = await queue.put("to: ops")
    one = await queue.receive()
    await one.nack()
    two = await queue.receive()
    assert (two.id, two.deliveries) == (item_id, 2)
    await two.nack()
    with pytest.raises(etcd_recipes.LockTimeoutError):
        await queue.try_receive()
    dead = await queue.dead_letters()
    assert [(d.id, d.value, d.value_string, d.deliveries) for d in dead] == [(item_id, b"to: ops", "to: ops", 2)]
    assert await queue.requeue_dead(item_id) is True
    assert await queue.requeue_dead(item_id) is False
    three = await queue.receive()
    assert (three.id, three.deliveries) == (item_id, 1)
    await three.ack()
    assert await queue.requeue_all_dead() == 0


async def test_delays_timeouts_cancellation_and_close(etcd: EtcdCluster, ns: str) -> None:
    client = await Client.connect(etcd.endpoints, namespace=ns)
    queue = client.work_queue("later")
    start = time.monotonic()
    late = await queue.put("late", delay=1.0)
    assert await queue.length() == 0
    with pytest.raises(etcd_recipes.LockTimeoutError):
        await queue.receive(timeout=0.2)
    item = await asyncio.wait_for(queue.receive(), EVENTUALLY)
    assert item.id == late and time.monotonic() - start >= 0.98
    await item.nack(delay=0.5)
    with pytest.raises(etcd_recipes.LockTimeoutError):
        await queue.try_receive()
    again = await asyncio.wait_for(queue.receive(), EVENTUALLY)
    assert again.deliveries == 2
    await again.ack()
    # A cancelled receive leaves no claim.
    waiter = asyncio.ensure_future(queue.receive())
    await asyncio.sleep(0.2)
    waiter.cancel()
    await queue.put("kept")
    assert await queue.length() == 1
    assert await count(etcd, ns, "later/claims/") == 0
    # close() ends a waiting receive with CLOSED; its claims go with it.
    held = await queue.receive()
    waiter = asyncio.ensure_future(queue.receive())
    await asyncio.sleep(0.2)
    await client.close()
    with pytest.raises(etcd_recipes.ClosedError):
        await asyncio.wait_for(waiter, EVENTUALLY)
    assert await held.lost() is None
    assert await count(etcd, ns, "later/claims/") == 0
    assert await count(etcd, ns, "later/items/") == 1


async def test_bad_arguments(client: Client) -> None:
    for name in ["", "q/"]:
        with pytest.raises(etcd_recipes.InvalidArgumentError):
            client.work_queue(name)
    for bad in [0, -1, 2**40]:
        with pytest.raises(etcd_recipes.InvalidArgumentError):
            client.work_queue("q", max_deliveries=bad)
    queue = client.work_queue("q")
    with pytest.raises(etcd_recipes.InvalidArgumentError):
        await queue.put("x", delay=-1.0)
    with pytest.raises(etcd_recipes.InvalidArgumentError):
        await queue.requeue_dead("a/b")
    with pytest.raises(etcd_recipes.InvalidArgumentError):
        client.counter("")
    with pytest.raises(etcd_recipes.InvalidArgumentError):
        await client.counter("n").add(2**64)
    with pytest.raises(TypeError):
        await client.counter("n").add("1")  # type: ignore[arg-type]


async def test_counter_exact_under_contention_and_decoding(client: Client) -> None:
    counter = client.counter("hits")
    assert counter.key == "hits"
    assert await counter.get() == 0

    async def adder() -> None:
        for _ in range(25):
            await counter.add()

    await asyncio.gather(*(adder() for _ in range(8)))
    assert await counter.get() == 200
    assert await client.get("hits") == b"200"
    assert await counter.add(-10) == 190
    assert await counter.compare_and_set(190, 5) is True
    assert await counter.compare_and_set(190, 6) is False
    await counter.set(-3)
    assert await counter.get() == -3
    await client.put("hits", "many")
    with pytest.raises(etcd_recipes.DecodeError) as e:
        await counter.add(1)
    assert "hits" in str(e.value)
