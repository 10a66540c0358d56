"""The read-write lock through the Python face, against a real etcd: readers share, a
writer excludes, a waiting writer goes before later readers, timeouts, session loss."""

from __future__ import annotations

import asyncio

import pytest

import etcd_recipes
from etcd_recipes import Client
from etcd_recipes.testing import EtcdCluster

from test_interop import lock_entries, wait_for_entries
from waiting import EVENTUALLY


async def test_readers_share_writers_exclude(client: Client) -> None:
    rw = client.rwlock("doc", ttl=5)
    state = {"readers": 0, "writers": 0, "most_readers": 0}

    async def reader() -> None:
        for _ in range(5):
            async with await rw.read() as g:
                assert state["writers"] == 0
                state["readers"] += 1
                state["most_readers"] = max(state["most_readers"], state["readers"])
                await g.put("doc-seen", "r")
                await asyncio.sleep(0.005)
                state["readers"] -= 1

    async def writer() -> None:
        for _ in range(5):
            async with await rw.write() as g:
                assert state["writers"] == 0 and state["readers"] == 0
                state["writers"] += 1
                await g.put("doc-seen", "w")
                await asyncio.sleep(0.005)
                state["writers"] -= 1

    await asyncio.gather(*(reader() for _ in range(4)), *(writer() for _ in range(2)))
    assert state["most_readers"] >= 2, state


async def test_waiting_writer_blocks_later_readers(etcd: EtcdCluster, client: Client, ns: str) -> None:
    rw = client.rwlock("ws", ttl=5)
    assert rw.name == "ws"
    r1 = await rw.read()
    assert r1.key.startswith(f"{ns}ws/read/")
    with pytest.raises(etcd_recipes.LockTimeoutError):
        await rw.try_write()
    order: list[str] = []
    writer_done = asyncio.Event()

    async def writer() -> None:
        g = await rw.write()
        order.append("writer")
        await writer_done.wait()
        await g.release()

    async def late_reader() -> None:
        async with await rw.read():
            order.append("reader")

    w = asyncio.ensure_future(writer())
    await wait_for_entries(etcd, f"{ns}ws/write/", 1)
    with pytest.raises(etcd_recipes.LockTimeoutError):
        await rw.try_read()
    with pytest.raises(etcd_recipes.LockTimeoutError):
        await rw.read(timeout=0.2)
    late = asyncio.ensure_future(late_reader())
    await wait_for_entries(etcd, f"{ns}ws/read/", 2)
    await r1.release()
    writer_done.set()
    await asyncio.wait_for(asyncio.gather(w, late), EVENTUALLY)
    assert order == ["writer", "reader"]
    assert await lock_entries(etcd, f"{ns}ws/") == []


async def test_session_loss_and_timeouts_leave_no_key(etcd: EtcdCluster, client: Client, ns: str) -> None:
    rw = client.rwlock("sl", ttl=5)
    w = await rw.write()
    with pytest.raises(etcd_recipes.LockTimeoutError):
        await client.rwlock("sl", timeout=0.1).write()
    session = await client.session(ttl=10)
    waiting = asyncio.ensure_future(session.rwlock("sl").read())
    await wait_for_entries(etcd, f"{ns}sl/", 2)
    await client.revoke_lease(session.lease_id)
    with pytest.raises(etcd_recipes.SessionLostError):
        await asyncio.wait_for(waiting, EVENTUALLY)
    assert len(await lock_entries(etcd, f"{ns}sl/")) == 1
    # Holding: the writer's lease is revoked; it is told and fenced; a reader gets in.
    nxt = asyncio.ensure_future(rw.read())
    await wait_for_entries(etcd, f"{ns}sl/", 2)
    await client.revoke_lease(w.lease_id)
    r = await asyncio.wait_for(nxt, EVENTUALLY)
    assert await asyncio.wait_for(w.lost(), EVENTUALLY) is not None
    with pytest.raises(etcd_recipes.FencedError):
        await w.put("sl-out", "stale")
    assert r.fencing_token > w.fencing_token
    await r.release()
    for name in ("", "a/"):
        with pytest.raises(etcd_recipes.InvalidArgumentError):
            client.rwlock(name)
    assert await lock_entries(etcd, f"{ns}sl/") == []
