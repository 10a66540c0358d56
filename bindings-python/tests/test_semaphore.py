"""The semaphore through the Python face, against a real etcd: capacity, FIFO, timeouts,
session loss while waiting and while holding, client close, bad input."""

from __future__ import annotations

import asyncio

import pytest

import etcd_recipes
from etcd_recipes import Client
from etcd_recipes.testing import EtcdCluster

from test_interop import lock_entries, wait_for_entries
from waiting import EVENTUALLY


async def test_never_more_than_permits_inside(etcd: EtcdCluster, ns: str) -> None:
    state = {"inside": 0, "most": 0}

    async def worker(c: Client) -> None:
        sem = c.semaphore("pool", 3, ttl=5)
        for _ in range(5):
            async with sem as permit:
                state["inside"] += 1
                state["most"] = max(state["most"], state["inside"])
                assert state["inside"] <= 3
                await permit.put("pool-last", str(permit.fencing_token))  # fenced: only while held
                await asyncio.sleep(0.005)
                state["inside"] -= 1

    clients = [await Client.connect(etcd.endpoints, namespace=ns) for _ in range(6)]
    try:
        await asyncio.gather(*(worker(c) for c in clients))
    finally:
        for c in clients:
            await c.close()
    assert state["most"] == 3, f"never 3 holders at once: {state}"
    assert await lock_entries(etcd, f"{ns}pool/") == []


async def test_fifo_timeouts_and_try(etcd: EtcdCluster, client: Client, ns: str) -> None:
    sem = client.semaphore("q", 1, ttl=5)
    assert (sem.name, sem.permits) == ("q", 1)
    held = await sem.acquire()
    assert held.key.startswith(f"{ns}q/") and held.is_held
    assert await client.get_string(held.key[len(ns):]) == "1"  # the value is the permit count
    with pytest.raises(etcd_recipes.LockTimeoutError):
        await sem.try_acquire()
    with pytest.raises(etcd_recipes.LockTimeoutError):
        await sem.acquire(timeout=0.2)
    with pytest.raises(etcd_recipes.LockTimeoutError):
        await client.semaphore("q", 1, timeout=0.1).acquire()
    assert len(await lock_entries(etcd, f"{ns}q/")) == 1, "a timed-out waiter left its key"

    order: list[int] = []

    async def waiter(i: int) -> None:
        async with sem:
            order.append(i)

    tasks = []
    for i in range(3):
        tasks.append(asyncio.ensure_future(waiter(i)))
        await wait_for_entries(etcd, f"{ns}q/", 2 + i)
    await held.release()
    await asyncio.wait_for(asyncio.gather(*tasks), EVENTUALLY)
    assert order == [0, 1, 2]
    assert await lock_entries(etcd, f"{ns}q/") == []


async def test_session_lost_waiting_and_holding(etcd: EtcdCluster, client: Client, ns: str) -> None:
    sem = client.semaphore("sl", 1, ttl=5)
    held = await sem.acquire()
    session = await client.session(ttl=10)
    waiting = asyncio.ensure_future(session.semaphore("sl", 1).acquire())
    await wait_for_entries(etcd, f"{ns}sl/", 2)
    await client.revoke_lease(session.lease_id)
    with pytest.raises(etcd_recipes.SessionLostError):
        await asyncio.wait_for(waiting, EVENTUALLY)
    assert len(await lock_entries(etcd, f"{ns}sl/")) == 1

    # Holding: the holder's lease is revoked; it is told, fenced, and the waiter gets in.
    nxt = asyncio.ensure_future(sem.acquire())
    await wait_for_entries(etcd, f"{ns}sl/", 2)
    reasons: list[str] = []
    held.on_lost(reasons.append)
    await client.revoke_lease(held.lease_id)
    permit = await asyncio.wait_for(nxt, EVENTUALLY)
    assert await asyncio.wait_for(held.lost(), EVENTUALLY) is not None
    with pytest.raises(etcd_recipes.FencedError):
        await held.put("sl-out", "stale")
    await permit.put("sl-out", "fresh")
    await permit.release()
    assert await permit.lost() is None
    assert reasons and await lock_entries(etcd, f"{ns}sl/") == []


async def test_client_close_ends_a_wait(etcd: EtcdCluster, client: Client, ns: str) -> None:
    held = await client.semaphore("cc", 1).acquire()
    other = await Client.connect(etcd.endpoints, namespace=ns)
    waiting = asyncio.ensure_future(other.semaphore("cc", 1).acquire())
    await wait_for_entries(etcd, f"{ns}cc/", 2)
    await other.close()
    with pytest.raises(etcd_recipes.ClosedError):
        await asyncio.wait_for(waiting, EVENTUALLY)
    await wait_for_entries(etcd, f"{ns}cc/", 1)
    await held.release()


async def test_bad_input_and_mixed_counts(etcd: EtcdCluster, client: Client, ns: str) -> None:
    for permits in (0, -1, 2**70, "3", 1.5):
        with pytest.raises(etcd_recipes.InvalidArgumentError):
            client.semaphore("x", permits)  # type: ignore[arg-type]
    for name in ("", "a/"):
        with pytest.raises(etcd_recipes.InvalidArgumentError):
            client.semaphore(name, 1)
    held = await client.semaphore("m", 3).acquire()
    with pytest.raises(etcd_recipes.InvalidArgumentError):
        await client.semaphore("m", 2).acquire()
    assert len(await lock_entries(etcd, f"{ns}m/")) == 1
    await held.release()
