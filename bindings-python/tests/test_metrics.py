"""Metrics, health and the inspector through the Python face, against a real etcd: the
waiters gauge and wait/hold histograms after real contention, the prometheus_client
collector and the text format, client.health() for a readiness probe, and the
`etcd-recipes` CLI showing locks and leaders held from Python."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

import etcd_recipes
import etcd_recipes.prometheus
from etcd_recipes import Client
from etcd_recipes.testing import EtcdCluster

from test_interop import wait_for_entries
from waiting import tail, wait_until

ROOT = Path(__file__).resolve().parents[2]


def sample(name: str, label: str | None = None) -> etcd_recipes.MetricSample | None:
    for f in etcd_recipes.metrics_snapshot():
        if f.name == name:
            return next((s for s in f.samples if s.label_value == label), None)
    raise AssertionError(f"no metric family {name}")


def value(name: str, label: str | None = None) -> float:
    s = sample(name, label)
    return 0.0 if s is None else s.value


def count(name: str, label: str | None = None) -> int:
    s = sample(name, label)
    return 0 if s is None else s.count


async def test_two_waiters_then_every_wait_and_hold_is_timed(etcd: EtcdCluster, client: Client, ns: str) -> None:
    name = f"report-{uuid.uuid4().hex[:8]}"  # metrics are per process: a name of our own
    lock = client.lock(name, ttl=10)
    holder = await lock.acquire()
    assert count("etcd_recipes_lock_wait_seconds", name) == 1
    waiters = [asyncio.ensure_future(lock.acquire()) for _ in range(2)]
    await wait_for_entries(etcd, f"{ns}{name}/", 3)
    assert value("etcd_recipes_lock_waiters", name) == 2
    await holder.release()
    first, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    g = first.pop().result()
    await g.release()
    last = await asyncio.wait_for(asyncio.gather(*waiters), 20)
    await next(x for x in last if x.is_held).release()
    assert count("etcd_recipes_lock_wait_seconds", name) == 3
    assert count("etcd_recipes_lock_hold_seconds", name) == 3
    assert value("etcd_recipes_lock_waiters", name) == 0
    s = sample("etcd_recipes_lock_wait_seconds", name)
    assert s is not None and s.buckets[-1] == (300.0, 3) and s.sum > 0

    # The prometheus_client collector and the text format carry the same series.
    reg = CollectorRegistry()
    etcd_recipes.prometheus.register(reg)
    text = generate_latest(reg).decode()
    want = f'etcd_recipes_lock_wait_seconds_count{{name="{name}"}} 3.0'
    assert want in text, f"{want!r} not in the collector's output ({len(text)} chars)"
    assert f'etcd_recipes_lock_waiters{{name="{name}"}} 0.0' in text
    assert f'etcd_recipes_lock_wait_seconds_count{{name="{name}"}} 3' in etcd_recipes.metrics_text()
    kinds = {f.name: f.kind for f in etcd_recipes.metrics_snapshot()}
    assert kinds["etcd_recipes_lock_wait_seconds"] == "histogram"
    assert kinds["etcd_recipes_session_losses_total"] == "counter"


async def test_health_for_a_readiness_probe(etcd: EtcdCluster, ns: str) -> None:
    async with await Client.connect(etcd.endpoints, namespace=ns) as c:
        h = c.health()
        assert h.healthy and h.open and h.problems == [] and h.oldest_renew is None
        session = await c.session(ttl=5)
        await c.put("cfg/a", "1")
        view = await c.config("cfg/", prefix=True)
        reg = await c.register("api", "api-1", "10.0.0.1:80", ttl=5)
        h = c.health()
        assert h.healthy, h.problems
        assert (h.sessions_alive, h.sessions_lost, h.views_current, h.views_behind) == (2, 0, 1, 0)
        assert [v.key for v in h.views] == [f"{ns}cfg/"] and h.views[0].current
        assert [(x.kind, x.name, x.ok) for x in h.components] == [("registration", "api/api-1", True)]
        assert h.oldest_renew is not None and time.time() - h.oldest_renew < 5
        assert {s.lease_id for s in h.sessions} == {session.lease_id, reg.lease_id}

        await c.revoke_lease(session.lease_id)
        assert await session.lost() is not None
        h = c.health()
        assert not h.healthy and h.sessions_lost == 1
        assert any(f"session {session.lease_id:x} lost" in p for p in h.problems), h.problems
        await session.close()
        assert c.health().healthy
        await reg.close()
        view.close()
    assert not c.health().healthy and not c.health().open


def cli_binary() -> Path:
    """`$ETCD_RECIPES_CLI`, else `<target>/debug/etcd-recipes` (test.sh builds it:
    `cargo build -q -p etcd-recipes-cli`)."""
    given = os.environ.get("ETCD_RECIPES_CLI")
    if given:
        return Path(given)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "debug" / "etcd-recipes"


CLI = cli_binary()
needs_cli = pytest.mark.skipif(
    not CLI.is_file(), reason="CLI not built: `cargo build -p etcd-recipes-cli` (bindings-python/test.sh does)"
)


def cli_json(etcd: EtcdCluster, ns: str, *args: str) -> object:
    p = subprocess.run([str(CLI), "--json", "--namespace", ns, *args], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, ETCD_ENDPOINTS=",".join(etcd.endpoints)))
    assert p.returncode == 0, tail(p.stderr)
    return json.loads(p.stdout)


@needs_cli
async def test_cli_shows_python_holders_and_leaders(etcd: EtcdCluster, client: Client, ns: str) -> None:
    guard = await client.lock("jobs/py", ttl=10).acquire()
    waiting = asyncio.ensure_future(client.lock("jobs/py", ttl=7).acquire())
    await wait_for_entries(etcd, f"{ns}jobs/py/", 2)
    leadership = await client.election("sched-py", ttl=10).campaign("py-node")

    locks = cli_json(etcd, ns, "locks", "jobs/py")
    assert isinstance(locks, dict)
    assert locks["holders"][0]["lease_id"] == guard.lease_id
    assert locks["holders"][0]["create_revision"] == guard.fencing_token
    assert [w["granted_ttl"] for w in locks["waiters"]] == [7]
    elections = cli_json(etcd, ns, "elections")
    assert isinstance(elections, list)
    assert [(e["name"], e["leader"]["value"], e["leader"]["create_revision"]) for e in elections] == [
        ("sched-py", "py-node", leadership.fencing_token)]

    p = subprocess.run([str(CLI), "--namespace", ns, "locks"], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, ETCD_ENDPOINTS=",".join(etcd.endpoints)))
    assert p.returncode == 0, tail(p.stderr)
    rows = [line.split() for line in p.stdout.splitlines()]
    assert rows[0][:3] == ["LOCK", "KIND", "ROLE"]
    assert ["jobs/py", "lock", "holder", f"{guard.lease_id:x}", str(guard.fencing_token)] == rows[1][:5]
    assert rows[2][:4] == ["jobs/py", "lock", "waiter", "1"]

    await guard.release()
    await (await asyncio.wait_for(waiting, 20)).release()
    await leadership.resign()
    await wait_until(lambda: cli_json(etcd, ns, "locks") == [], "the CLI shows no lock after release")
