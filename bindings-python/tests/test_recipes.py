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
    waiter = asyncio.ensure_future(client.lock("jobs", ttl=5).acquire())
    raw = await Client.connect(etcd.endpoints)
    # wait until the waiter's key exists
    for _ in range(200):
        out = subprocess.run([*etcd.etcdctl, "get", "--prefix", "--keys-only", f"{ns}jobs/"],
                             env=dict(os.environ, ETCDCTL_API="3"), capture_output=True, text=True, check=True)
        if len([k for k in out.stdout.split() if k]) == 2:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("waiter never queued")
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    for _ in range(200):
        out = subprocess.run([*etcd.etcdctl, "get", "--prefix", "--keys-only", f"{ns}jobs/"],
                             env=dict(os.environ, ETCDCTL_API="3"), capture_output=True, text=True, check=True)
        keys = [k for k in out.stdout.split() if k]
        if keys == [holder.key]:
            break
        await asyncio.sleep(0.01)
    assert keys == [holder.key]
    await holder.release()
    await raw.close()


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
        assert time.monotonic() - t0 < 2
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
    async with client.lock("shared", ttl=5):
        # etcdctl must not get it while we hold it
        p = subprocess.Popen([*etcd.etcdctl, "lock", f"{ns}shared", "echo", "GOT"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        await asyncio.sleep(1.0)
        assert p.poll() is None, "etcdctl got the lock while Python held it"
    out, _ = await asyncio.get_running_loop().run_in_executor(None, lambda: p.communicate(timeout=10))
    assert "GOT" in out


async def test_election_failover_and_observe(client: Client) -> None:
    election = client.election("leader", ttl=2)
    seen: list[bytes | None] = []
    observer = election.observe()

    async def watch() -> None:
        async for leader in observer:
            seen.append(None if leader is None else leader.value)

    wtask = asyncio.ensure_future(watch())
    a = await election.campaign("node-a")
    assert a.is_leader
    b_task = asyncio.ensure_future(election.campaign("node-b"))
    await asyncio.sleep(0.2)
    assert not b_task.done()
    info = await election.leader()
    assert info is not None and info.value == b"node-a"
    await a.proclaim("node-a2")
    await a.resign()
    b = await asyncio.wait_for(b_task, 5)
    assert b.is_leader and not a.is_leader
    with pytest.raises(etcd_recipes.NotLeaderError):
        await a.proclaim("x")
    # failover on session loss: b's lease revoked -> b loses, c takes over
    c_task = asyncio.ensure_future(election.campaign("node-c"))
    await client.revoke_lease((await client.leader("leader")).lease_id)
    await asyncio.wait_for(b.lost(), 5)
    c = await asyncio.wait_for(c_task, 5)
    assert c.is_leader
    await c.resign()
    async with election.campaign("node-d") as d:
        assert d.is_leader
    assert not d.is_leader
    await asyncio.sleep(0.3)
    await observer.aclose()
    await asyncio.wait_for(wtask, 2)
    assert b"node-a" in seen and b"node-a2" in seen and b"node-b" in seen and b"node-c" in seen


async def test_registry_self_heals_and_discovery(client: Client) -> None:
    view = await client.discover("svc")
    assert view.instances() == []
    sets = view.__aiter__()
    next_set = asyncio.ensure_future(sets.__anext__())
    await asyncio.sleep(0.05)
    async with client.register("svc", "i-1", "10.0.0.1:80", metadata={"zone": "a"}, ttl=2) as reg:
        got = await asyncio.wait_for(next_set, 5)
        assert [i.id for i in got] == ["i-1"] and got[0].metadata == {"zone": "a"}
        assert view.pick_round_robin() is not None
        old_lease = reg.lease_id
        await client.revoke_lease(old_lease)
        for _ in range(100):
            if reg.reregistrations >= 1 and reg.state == "registered" and [i.id for i in view.instances()] == ["i-1"]:
                break
            await asyncio.sleep(0.05)
        assert reg.reregistrations >= 1 and reg.lease_id != old_lease
        assert [i.addr for i in await client.list_instances("svc")] == ["10.0.0.1:80"]
        await sets.aclose()
    for _ in range(100):
        if view.instances() == []:
            break
        await asyncio.sleep(0.02)
    assert view.instances() == []
    view.close()


async def test_config_view_local_reads_and_compaction(etcd_factory: Any) -> None:
    cluster: EtcdCluster = etcd_factory(1)
    client = await Client.connect(cluster.endpoints)
    await client.put("app/a", "1")
    await client.put("app/j", '{"x": [1, 2]}')
    cfg = await client.config("app/", prefix=True, reconcile_interval=1.0)
    assert cfg.get("app/a") == b"1" and cfg.get_json("app/j") == {"x": [1, 2]}
    assert cfg.get("app/missing") is None and cfg.keys() == ["app/a", "app/j"]
    await client.put("app/bad", "{")
    for _ in range(100):
        if cfg.get("app/bad") is not None:
            break
        await asyncio.sleep(0.02)
    with pytest.raises(etcd_recipes.DecodeError, match="app/bad"):
        cfg.get_json("app/bad")
    changes = cfg.changes()
    await client.put("app/a", "2")
    ch = await asyncio.wait_for(changes.__anext__(), 5)
    assert ch.key == "app/a" and ch.old == b"1" and ch.new == b"2"
    for i in range(20):
        await client.put("app/a", str(100 + i))
    await cluster.compact()
    for _ in range(200):
        if cfg.get("app/a") == b"119":
            break
        await asyncio.sleep(0.02)
    assert cfg.get("app/a") == b"119"
    await changes.aclose()
    single = await client.config("app/a")
    assert single.get() == b"119" and single.get_str() == "119"
    cfg.close()
    single.close()
    await client.close()
