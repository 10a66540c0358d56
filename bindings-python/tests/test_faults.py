"""A client on several endpoints keeps working when one member is dead or hung.

The same core behaviour as core/tests/faults.rs, through the Python face: connect
succeeds when any endpoint serves, and requests move off a SIGSTOPped member instead of
waiting for it (bounds are loose: they tell "moved on" from "waited for the 10 s request
timeout")."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable

import etcd_recipes
from etcd_recipes import Client
from etcd_recipes.testing import EtcdCluster, etcdctl

MOVED_ON = 4.0


def refused_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


async def test_connect_succeeds_when_any_endpoint_serves(etcd: EtcdCluster, ns: str) -> None:
    dead = refused_endpoint()
    for i in range(20):
        eps = [dead, etcd.endpoints[0]] if i % 2 == 0 else [etcd.endpoints[0], dead]
        async with await Client.connect(eps, namespace=ns, connect_timeout=10) as c:
            await c.put("k", str(i))
            assert await c.get("k") == str(i).encode()


async def test_connect_names_every_endpoint_when_none_serves() -> None:
    a, b = refused_endpoint(), refused_endpoint()
    t0 = time.monotonic()
    try:
        await Client.connect([a, b], connect_timeout=1.0)
        raise AssertionError("connected to nothing")
    except etcd_recipes.ConnectError as e:
        assert a in str(e) and b in str(e), str(e)[:500]
    assert time.monotonic() - t0 < 1.0 + 2.0


def follower_index(cluster: EtcdCluster) -> int:
    """A member that is not the leader (`etcdctl endpoint status`)."""
    out = json.loads(etcdctl(cluster, "endpoint", "status", "-w", "json").stdout)
    for i, ep in enumerate(cluster.endpoints):
        st = next(s for s in out if s["Endpoint"].endswith(ep.split("//")[-1]))["Status"]
        if st["header"]["member_id"] != st["leader"]:
            return i
    raise AssertionError("no follower found")


async def test_requests_move_off_a_paused_member(etcd_factory: Callable[..., EtcdCluster]) -> None:
    cluster = etcd_factory(3)
    async with await Client.connect(cluster.endpoints, connect_timeout=10) as c:
        await c.put("warm", "up")
        victim = follower_index(cluster)
        cluster.pause(victim)
        try:
            lat, unknown = [], 0
            for i in range(40):
                t0 = time.monotonic()
                try:
                    if i % 2 == 0:
                        await c.put(f"k{i % 5}", str(i))
                    else:
                        assert await c.get("warm") == b"up"
                except etcd_recipes.UnknownOutcomeError:
                    unknown += 1  # a write sent to the member as it froze
                lat.append(time.monotonic() - t0)
        finally:
            cluster.resume(victim)
    lat.sort()
    print(f"member {victim} paused: 40 ops, p50 {lat[20] * 1e3:.1f} ms, max {lat[-1] * 1e3:.1f} ms, {unknown} unknown")
    assert unknown <= 1, f"{unknown} writes with an unknown outcome"
    assert lat[-1] < MOVED_ON, f"an op waited {lat[-1]:.2f} s on the paused member"
