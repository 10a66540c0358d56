"""Every recipe through the Python face, against a real etcd."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from typing import Any

import pytest

import etcd_recipes
from etcd_recipes import Client
from etcd_recipes.testing import EtcdCluster

from test_interop import lock_entries, wait_for_entries
from waiting import EVENTUALLY, summary, wait_until


async def test_lock_mutual_exclusion_four_tasks(client: Client) -> None:
    counter = {"n": 0, "inside": 0, "max_inside": 0}
    tokens: list[int] = []

    async def worker() -> None:
        for _ in range(5):
            async with client.lock("counter", ttl=5) as guard:
                counter["inside"] += 1
                counter["max_inside"] = max(counter["max_inside"], counter["inside"])
                n = counter["n"]
                await asyncio.sleep(0.001)  # yield inside the critical section
                counter["n"] = n + 1
                tokens.append(guard.fencing_token)
                await guard.put("counter-value", str(n + 1))
                counter["inside"] -= 1

    await asyncio.gather(*(worker() for _ in range(4)))
    assert counter["n"] == 20 and counter["max_inside"] == 1
    assert tokens == sorted(tokens) and len(set(tokens)) == 20
    assert await client.get("counter-value") == b"20"


async def test_cancelled_lock_waiter_leaves_no_key(etcd: EtcdCluster, client: Client, ns: str) -> None:
    holder = await client.lock("jobs", ttl=5).acquire()
    waiter = asyncio.ensure_future(client.lock("jobs", ttl=30).acquire())
    prefix = f"{ns}jobs/"
    await wait_for_entries(etcd, prefix, 2)  # the waiter's key exists
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    # Its key goes right away (deleted on cancel), not one TTL (30 s) later: the deadline
    # is generous for a loaded machine and still well below the TTL.
    keys: list[str] = []

    async def only_holder_left() -> bool:
        nonlocal keys
        keys = [k for k, _ in await lock_entries(etcd, prefix)]
        return keys == [holder.key]

    await wait_until(only_holder_left, lambda: f"waiter key left behind: {keys}")
    assert holder.is_held
    await holder.release()


async def test_try_acquire_timeout_and_fencing(client: Client) -> None:
    lock = client.lock("t", ttl=5, timeout=0.3)
    async with lock as g:
        assert g.is_held
        with pytest.raises(etcd_recipes.LockTimeoutError) as ei:
            await client.lock("t", ttl=5).try_acquire()
        assert ei.value.code == "LOCK_TIMEOUT"
        t0 = time.monotonic()
        with pytest.raises(etcd_recipes.LockTimeoutError):
            await client.lock("t", ttl=5, timeout=0.3).acquire()
        # Gives up after its 0.3 s timeout, not the lock's TTL (5 s); loose for a loaded machine.
        elapsed = time.monotonic() - t0
        assert elapsed < 4, f"acquire(timeout=0.3) gave up after {elapsed:.1f} s"
        await g.txn([("put", "a", "1"), ("delete", "b")])
    assert not g.is_held
    with pytest.raises(etcd_recipes.FencedError):
        await g.put("a", "2")
    with pytest.raises(TypeError):
        await g.txn([("bogus",)])
    with pytest.raises(etcd_recipes.InvalidArgumentError):
        await client.lock("", ttl=5).acquire()


async def test_python_lock_excludes_etcdctl_lock(etcd: EtcdCluster, client: Client, ns: str) -> None:
    env = dict(os.environ, ETCDCTL_API="3")
    async with client.lock("shared", ttl=5) as guard:
        # etcdctl must not get it while we hold it
        p = subprocess.Popen([*etcd.etcdctl, "lock", f"{ns}shared", "echo", "GOT"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            entries = await wait_for_entries(etcd, f"{ns}shared/", 2)  # etcdctl queued behind us
            assert entries[0][0] == guard.key
            await asyncio.sleep(1.0)  # the window in which etcdctl must keep waiting
            assert p.poll() is None, "etcdctl got the lock while Python held it"
        except BaseException:
            p.kill()
            p.wait()
            raise
    out, err = await asyncio.get_running_loop().run_in_executor(None, lambda: p.communicate(timeout=30))
    assert p.returncode == 0 and "GOT" in out, f"rc={p.returncode} {out[-500:]} {err[-500:]}"


async def test_election_failover_and_observe(etcd: EtcdCluster, client: Client, ns: str) -> None:
    election = client.election("leader", ttl=2)
    seen: list[bytes | None] = []
    observer = election.observe()

    async def watch() -> None:
        async for leader in observer:
            seen.append(None if leader is None else leader.value)

    async def observed(value: bytes) -> None:
        # The observer coalesces changes that reach it together: wait until it has seen
        # this leader before the next change, so that it has every one to report.
        await wait_until(lambda: value in seen, lambda: f"observer never saw {value!r}; saw {summary(seen)}")

    wtask = asyncio.ensure_future(watch())
    a = await election.campaign("node-a")
    assert a.is_leader
    await observed(b"node-a")
    b_task = asyncio.ensure_future(election.campaign("node-b"))
    await asyncio.sleep(0.2)  # the window in which b must keep waiting
    assert not b_task.done()
    info = await election.leader()
    assert info is not None and info.value == b"node-a"
    await a.proclaim("node-a2")
    await observed(b"node-a2")
    await a.resign()
    b = await asyncio.wait_for(b_task, EVENTUALLY)
    assert b.is_leader and not a.is_leader
    with pytest.raises(etcd_recipes.NotLeaderError):
        await a.proclaim("x")
    await observed(b"node-b")
    # failover on session loss: b's lease revoked -> b loses, c takes over
    c_task = asyncio.ensure_future(election.campaign("node-c"))
    await wait_for_entries(etcd, f"{ns}leader/", 2)  # c queued behind b: a real failover
    leader = await client.leader("leader")
    assert leader is not None and leader.value == b"node-b"
    await client.revoke_lease(leader.lease_id)
    await asyncio.wait_for(b.lost(), EVENTUALLY)
    c = await asyncio.wait_for(c_task, EVENTUALLY)
    assert c.is_leader
    await observed(b"node-c")
    await c.resign()
    async with election.campaign("node-d") as d:
        assert d.is_leader
    assert not d.is_leader
    await observer.aclose()
    await asyncio.wait_for(wtask, EVENTUALLY)
    assert seen.index(b"node-a") < seen.index(b"node-a2") < seen.index(b"node-b") < seen.index(b"node-c"), seen


async def test_registry_self_heals_and_discovery(client: Client) -> None:
    view = await client.discover("svc")
    assert view.instances() == []
    sets = view.updates()  # subscribed now: no change after this is missed
    assert await asyncio.wait_for(sets.__anext__(), EVENTUALLY) == []  # the current set first
    states: list[str] = []
    async with client.register("svc", "i-1", "10.0.0.1:80", metadata={"zone": "a"}, ttl=2) as reg:
        reg.on_state_change(states.append)
        got = await asyncio.wait_for(sets.__anext__(), EVENTUALLY)
        assert [i.id for i in got] == ["i-1"] and got[0].metadata == {"zone": "a"}
        assert view.pick_round_robin() is not None
        old_lease = reg.lease_id
        await client.revoke_lease(old_lease)
        await wait_until(
            lambda: reg.reregistrations >= 1 and reg.state == "registered"
            and [i.id for i in view.instances()] == ["i-1"],
            lambda: f"not re-registered: {reg.reregistrations} re-registrations, state {reg.state}, "
            f"view {[i.id for i in view.instances()]}",
        )
        assert reg.lease_id != old_lease
        assert [i.addr for i in await client.list_instances("svc")] == ["10.0.0.1:80"]
        await wait_until(lambda: states[-1:] == ["registered"], lambda: f"state changes seen: {states}")
        assert "recovering" in states, states
        await sets.aclose()
    await wait_until(lambda: states[-1:] == ["closed"], lambda: f"state changes seen: {states}")
    await wait_until(lambda: view.instances() == [], lambda: f"view still has {[i.id for i in view.instances()]}")
    # `async for instances in view` is `updates()`: the current (empty) set first.
    async for instances in view:
        assert instances == []
        break
    view.close()


async def test_view_updates_miss_nothing_between_reads(client: Client) -> None:
    """A change that lands while nobody awaits the iterator is in the next set."""
    view = await client.discover("busy")
    sets = view.updates()
    assert await asyncio.wait_for(sets.__anext__(), EVENTUALLY) == []
    reg = await client.register("busy", "a", "10.0.0.1:80", ttl=5)
    await wait_until(lambda: len(view) == 1, "the view saw the registration")  # nobody reading
    got = await asyncio.wait_for(sets.__anext__(), EVENTUALLY)
    assert [i.id for i in got] == ["a"]
    await reg.close()
    await wait_until(lambda: len(view) == 0, "the view saw the deregistration")
    assert await asyncio.wait_for(sets.__anext__(), EVENTUALLY) == []
    view.close()  # ends the iteration
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(sets.__anext__(), EVENTUALLY)


async def test_config_view_local_reads_and_compaction(etcd_factory: Any) -> None:
    cluster: EtcdCluster = etcd_factory(1)
    client = await Client.connect(cluster.endpoints)
    await client.put("app/a", "1")
    await client.put("app/j", '{"x": [1, 2]}')
    cfg = await client.config("app/", prefix=True, reconcile_interval=1.0)
    assert cfg.get("app/a") == b"1" and cfg.get_json("app/j") == {"x": [1, 2]}
    assert cfg.get("app/missing") is None and cfg.keys() == ["app/a", "app/j"]
    await client.put("app/bad", "{")
    await wait_until(lambda: cfg.get("app/bad") is not None, "app/bad in the view")
    with pytest.raises(etcd_recipes.DecodeError, match="app/bad"):
        cfg.get_json("app/bad")
    changes = cfg.changes()
    await client.put("app/a", "2")
    ch = await asyncio.wait_for(changes.__anext__(), EVENTUALLY)
    assert ch.key == "app/a" and ch.old == b"1" and ch.new == b"2"
    for i in range(20):
        await client.put("app/a", str(100 + i))
    await cluster.compact()
    await wait_until(lambda: cfg.get("app/a") == b"119", lambda: f"app/a = {cfg.get('app/a')!r}, expected b'119'")
    await changes.aclose()
    single = await client.config("app/a")
    assert single.get() == b"119" and single.get_string() == "119"
    cfg.close()
    single.close()
    await client.close()
