"""Lifetimes through the Python face: per-use and shared sessions, loss signals (awaitable
and callback) that fire on a loss only, timeouts that give up with LockTimeoutError, and
`client.close()` ending everything made from the client."""

from __future__ import annotations

import asyncio
import functools
import gc

import pytest

import etcd_recipes
from etcd_recipes import Client
from etcd_recipes.testing import EtcdCluster

from test_interop import lock_entries, wait_for_entries
from waiting import EVENTUALLY, wait_until


async def test_a_lock_on_a_session_uses_its_lease(client: Client) -> None:
    async with await client.session(ttl=5) as session:
        assert session.lease_id_hex == f"{session.lease_id:x}"
        for lock in (client.lock("jobs", session=session), session.lock("jobs")):
            guard = await lock.acquire()
            assert guard.lease_id == session.lease_id and guard.name == "jobs" == lock.name
            assert guard.key.endswith(f"jobs/{session.lease_id_hex}")
            await guard.release()
            assert await guard.lost() is None  # released: a normal end
        assert session.is_alive  # a lock on a shared session leaves it open


async def test_a_per_use_lock_closes_its_own_session(client: Client) -> None:
    guard = await client.lock("jobs", ttl=30).acquire()
    assert await client.lease_exists(guard.lease_id)
    await guard.release()
    assert not await client.lease_exists(guard.lease_id)
    leadership = await client.election("boss", ttl=30).campaign("me")
    assert await client.lease_exists(leadership.lease_id)
    await leadership.resign()
    assert not await client.lease_exists(leadership.lease_id)
    assert await leadership.lost() is None  # resigned: a normal end


async def test_timeouts_give_up_with_lock_timeout(etcd: EtcdCluster, client: Client, ns: str) -> None:
    held = await client.lock("t", ttl=5).acquire()
    lock = client.lock("t", ttl=5)  # no timeout of its own
    with pytest.raises(etcd_recipes.LockTimeoutError):
        await lock.acquire(timeout=0.2)
    leader = await client.election("e", ttl=5).campaign("first")
    with pytest.raises(etcd_recipes.LockTimeoutError) as ei:
        await client.election("e", ttl=5, timeout=0.2).campaign("second")
    assert ei.value.code == "LOCK_TIMEOUT"
    with pytest.raises(etcd_recipes.LockTimeoutError):
        await client.election("e", ttl=5).campaign("third", timeout=0.2)
    # Whoever gave up left no key behind.
    assert [k for k, _ in await lock_entries(etcd, f"{ns}t/")] == [held.key]
    assert [k for k, _ in await lock_entries(etcd, f"{ns}e/")] == [leader.key]
    await held.release()
    await leader.resign()


async def test_loss_callbacks_fire_on_a_loss_only(client: Client) -> None:
    called: dict[str, list[str]] = {"released": [], "resigned": [], "closed": [], "guard": [], "leader": [],
                                    "session": []}
    # Normal ends first: none of these may call back.
    g = await client.lock("a", ttl=5).acquire()
    g.on_lost(called["released"].append)
    await g.release()
    ld = await client.election("x", ttl=5).campaign("v")
    ld.on_lost(called["resigned"].append)
    await ld.resign()
    closed = await client.session(ttl=5)
    closed.on_lost(called["closed"].append)
    await closed.close()
    # Then a loss: everything on this session's lease is lost when it is revoked.
    session = await client.session(ttl=5)
    guard = await session.lock("b").acquire()
    leadership = await session.election("y").campaign("v")
    guard.on_lost(called["guard"].append)
    leadership.on_lost(called["leader"].append)
    session.on_lost(called["session"].append)
    await client.revoke_lease(session.lease_id)
    await wait_until(lambda: all(called[k] for k in ("guard", "leader", "session")), lambda: f"callbacks: {called}")
    for k in ("guard", "leader", "session"):
        assert len(called[k]) == 1 and isinstance(called[k][0], str), called
    assert called["released"] == called["resigned"] == called["closed"] == [], called
    assert await session.lost() == called["session"][0]
    assert not guard.is_held and not leadership.is_leader


async def test_a_callback_keeps_nothing_alive(etcd: EtcdCluster, client: Client, ns: str) -> None:
    guard = await client.lock("dropped", ttl=30).acquire()
    guard.on_lost(lambda reason: None)
    # A callback that refers back to its guard: a cycle the garbage collector must see.
    cyclic = await client.lock("cycle", ttl=30).acquire()
    cyclic.on_lost(functools.partial(print, cyclic))
    assert [k for k, _ in await lock_entries(etcd, f"{ns}dropped/")] == [guard.key]
    assert [k for k, _ in await lock_entries(etcd, f"{ns}cycle/")] == [cyclic.key]
    del guard, cyclic
    gc.collect()
    # Dropping a guard releases the lock (its session goes with it), callback or not;
    # their TTL (30 s) is not what frees them.
    await wait_until(lambda: _no_entries(etcd, f"{ns}dropped/"), "the dropped guard's key gone")
    await wait_until(lambda: _no_entries(etcd, f"{ns}cycle/"), "the key of the guard in a cycle gone")


async def _no_entries(etcd: EtcdCluster, prefix: str) -> bool:
    return await lock_entries(etcd, prefix) == []


async def test_leader_info_and_leadership_members(client: Client) -> None:
    election = client.election("members", ttl=5)
    async with election.campaign(b"\xffnode") as leadership:
        assert leadership.name == "members" and leadership.value == b"\xffnode"
        assert leadership.value_string == "\ufffdnode"
        info = await client.leader("members")
        assert info is not None and info == await election.leader()
        assert (info.key, info.fencing_token, info.lease_id) == (
            leadership.key, leadership.fencing_token, leadership.lease_id)
        await leadership.proclaim("node-1")
        info = await election.leader()
        assert info is not None and info.value == b"node-1" and info.value_string == "node-1"


async def test_config_view_members(client: Client) -> None:
    await client.put("cfg/a", "1")
    async with await client.config("cfg/", prefix=True) as view:
        assert view.is_prefix and view.key == "cfg/"
        assert view.has("cfg/a") and "cfg/a" in view and not view.has("cfg/b") and "cfg/b" not in view
        assert view.get_string("cfg/a") == "1"
        with pytest.raises(etcd_recipes.InvalidArgumentError):
            view.get()  # a prefix view needs the key
        changes = view.changes()
        await client.delete("cfg/a")
        change = await asyncio.wait_for(changes.__anext__(), EVENTUALLY)
        assert change.key == "cfg/a" and change.deleted and change.new is None and change.old == b"1"
    async with await client.config("cfg/a") as single:
        assert not single.is_prefix and single.get() is None and not single.has("cfg/a")


async def test_client_close_ends_everything_made_from_it(etcd: EtcdCluster, client: Client, ns: str) -> None:
    other = await Client.connect(etcd.endpoints, namespace=ns)
    holder = await client.lock("busy", ttl=5).acquire()
    guard = await other.lock("mine", ttl=30).acquire()
    waiter = asyncio.ensure_future(other.lock("busy", ttl=30).acquire())
    await wait_for_entries(etcd, f"{ns}busy/", 2)
    leadership = await other.election("boss", ttl=30).campaign("other")
    registration = await other.register("svc", "i-1", "10.0.0.1:80", ttl=30)
    view = await other.discover("svc")
    sets = view.updates()
    assert [i.id for i in await sets.__anext__()] == ["i-1"]
    observer = other.observe_leader("boss")
    assert (await observer.__anext__()) is not None
    session = await other.session(ttl=30)

    await asyncio.wait_for(other.close(), 10)
    assert other.is_closed
    with pytest.raises(etcd_recipes.ClosedError):
        await asyncio.wait_for(waiter, EVENTUALLY)
    assert await guard.lost() is None and not guard.is_held
    assert await leadership.lost() is None and not leadership.is_leader
    assert await session.lost() is None and session.state == "closed"
    assert registration.state == "closed"
    for it in (sets, observer):
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(it.__anext__(), EVENTUALLY)
    with pytest.raises(etcd_recipes.ClosedError):
        await other.get("k")
    # Nothing of it is left in etcd (every TTL is 30 s: not expiry).
    assert [k for k, _ in await lock_entries(etcd, f"{ns}busy/")] == [holder.key]
    assert await lock_entries(etcd, f"{ns}mine/") == []
    assert await client.leader("boss") is None and await client.list_instances("svc") == []
    for lease in (guard.lease_id, leadership.lease_id, registration.lease_id, session.lease_id):
        assert not await client.lease_exists(lease)
    await other.close()  # idempotent
    await holder.release()
