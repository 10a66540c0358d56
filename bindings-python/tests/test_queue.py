"""Barrier, DoubleBarrier, Queue and PriorityQueue through the Python face, against a real etcd.
(The protocols and faults are covered in core/tests/barrier.rs and core/tests/queue.rs; here:
the face's conversions, errors and idioms.)"""

from __future__ import annotations

import asyncio

import pytest

import etcd_recipes
from etcd_recipes import Client
from etcd_recipes.testing import EtcdCluster

from waiting import EVENTUALLY, summary, wait_until

WINDOW = 0.3  # time for a waiter to get into its wait (never asserted on)


async def test_queue_fifo_values_and_try_dequeue(client: Client) -> None:
    q = client.queue("jobs")
    assert q.name == "jobs"
    assert await q.try_dequeue() is None
    key = await q.enqueue(b"\x00bytes")
    assert key.endswith(tuple("0123456789")) and "/jobs/" in key
    await q.enqueue("text")
    await q.enqueue('{"n": 1}')
    assert await q.length() == 3
    first = await q.dequeue()
    assert first.value == b"\x00bytes" and first.revision > 0 and first.key == key
    assert (await q.dequeue(timeout=1.0)).value_string == "text"
    item = await q.try_dequeue()
    assert item is not None and item.value_json() == {"n": 1}
    assert await q.length() == 0
    with pytest.raises(etcd_recipes.LockTimeoutError):
        await q.dequeue(timeout=0.1)
    with pytest.raises(etcd_recipes.LockTimeoutError):
        await client.queue("jobs", timeout=0.1).dequeue()
    with pytest.raises(etcd_recipes.InvalidArgumentError):
        client.queue("bad/")
    with pytest.raises(etcd_recipes.InvalidArgumentError):
        await q.dequeue(timeout=-1.0)
    with pytest.raises(TypeError):
        await q.enqueue(42)  # type: ignore[arg-type]


async def test_priority_queue_order(client: Client) -> None:
    q = client.priority_queue("work")
    for value, pr in [("e1", 5), ("a1", 1), ("z", 65535), ("e2", 5), ("top", 0), ("a2", 1)]:
        await q.enqueue(value, pr)
    got = []
    while (item := await q.try_dequeue()) is not None:
        got.append(item.value_string)
    assert got == ["top", "a1", "a2", "e1", "e2", "z"]
    for bad in (-1, 65536, 2**70):
        with pytest.raises(etcd_recipes.InvalidArgumentError):
            await q.enqueue("x", bad)
    with pytest.raises(TypeError):
        await q.enqueue("x", "1")  # type: ignore[arg-type]


async def test_concurrent_consumers_get_every_item_once(client: Client) -> None:
    q = client.queue("shared")
    got: list[str] = []

    async def consumer() -> None:
        while True:
            try:
                item = await q.dequeue(timeout=1.0)
            except etcd_recipes.LockTimeoutError:
                return
            got.append(item.value_string)

    async def producer(p: int) -> None:
        for i in range(25):
            await q.enqueue(f"{p}-{i}")

    await asyncio.gather(*(consumer() for _ in range(4)), *(producer(p) for p in range(2)))
    want = {f"{p}-{i}" for p in range(2) for i in range(25)}
    assert set(got) == want, f"missing: {sorted(want - set(got))[:5]}"
    assert len(got) == len(want), f"duplicates: {summary(sorted(got))}"


async def test_waiting_dequeue_gets_the_next_item_and_close_ends_it(etcd: EtcdCluster, ns: str) -> None:
    async with await Client.connect(etcd.endpoints, namespace=ns) as c:
        q = c.queue("inbox")
        waiter = asyncio.ensure_future(q.dequeue())
        await asyncio.sleep(WINDOW)
        assert not waiter.done()
        await q.enqueue("hello")
        assert (await asyncio.wait_for(waiter, EVENTUALLY)).value_string == "hello"
        pending = asyncio.ensure_future(c.priority_queue("p").dequeue())
        await asyncio.sleep(WINDOW)
        await c.close()
        with pytest.raises(etcd_recipes.ClosedError):
            await asyncio.wait_for(pending, EVENTUALLY)


async def test_barrier_hold_wait_release(client: Client) -> None:
    b = client.barrier("gate")
    assert b.name == "gate" and b.key.endswith("gate")
    await asyncio.wait_for(b.wait(), EVENTUALLY)  # never held: at once
    assert await b.hold() is True
    assert await b.hold() is False
    assert await b.is_held()
    with pytest.raises(etcd_recipes.LockTimeoutError):
        await b.wait(timeout=0.1)
    waiters = [asyncio.ensure_future(b.wait()) for _ in range(3)]
    await asyncio.sleep(WINDOW)
    assert not any(w.done() for w in waiters)
    assert await b.release() is True
    await asyncio.wait_for(asyncio.gather(*waiters), EVENTUALLY)
    assert await b.release() is False


async def test_double_barrier_parties_enter_and_leave_together(client: Client, etcd: EtcdCluster, ns: str) -> None:
    parties = [client.double_barrier("round", 3, ttl=10) for _ in range(3)]
    assert parties[0].count == 3 and parties[0].name == "round"
    entering = [asyncio.ensure_future(p.enter()) for p in parties[:2]]
    await asyncio.sleep(WINDOW)
    assert not any(e.done() for e in entering), "entered before the third party"
    await parties[2].enter()
    await asyncio.wait_for(asyncio.gather(*entering), EVENTUALLY)
    leaving = [asyncio.ensure_future(p.leave()) for p in parties[:2]]
    await asyncio.sleep(WINDOW)
    assert not any(e.done() for e in leaving), "left before every party left"
    await parties[2].leave()
    await asyncio.wait_for(asyncio.gather(*leaving), EVENTUALLY)
    assert await parties[0].lost() is None

    # async with: enter, then leave on exit.
    async def party() -> None:
        async with client.double_barrier("again", 2) as b:
            assert isinstance(b, etcd_recipes.DoubleBarrier)

    await asyncio.wait_for(asyncio.gather(party(), party()), EVENTUALLY)
    with pytest.raises(etcd_recipes.LockTimeoutError):
        await client.double_barrier("alone", 2).enter(timeout=0.2)
    with pytest.raises(etcd_recipes.InvalidArgumentError):
        await client.double_barrier("never", 2).leave()
    for bad in (0, -1):
        with pytest.raises(etcd_recipes.InvalidArgumentError):
            client.double_barrier("x", bad)


async def test_double_barrier_loss_is_signalled(client: Client, etcd: EtcdCluster) -> None:
    async with await client.session(ttl=30) as session:
        doomed = client.double_barrier("round", 2, session=session)
        other = client.double_barrier("round", 2)
        await asyncio.gather(doomed.enter(), other.enter())
        seen: list[str] = []
        doomed.on_lost(seen.append)
        lost = asyncio.ensure_future(doomed.lost())
        await client.revoke_lease(session.lease_id)
        reason = await asyncio.wait_for(lost, EVENTUALLY)
        assert reason
        await wait_until(lambda: len(seen) == 1, "on_lost called")
        # The lost party counts as left: the other leaves alone.
        await asyncio.wait_for(other.leave(), EVENTUALLY)
        with pytest.raises(etcd_recipes.SessionLostError):
            await doomed.leave()
