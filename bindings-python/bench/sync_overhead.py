"""What the blocking face (etcd_recipes.sync) costs over the asyncio face, per call.

Round trips to one etcd, one at a time: `get` of one key and an uncontended lock
acquire + release, on each face; and how long after a Ctrl-C (KeyboardInterrupt) the
interrupted waiter's key is gone from etcd. Prints one JSON line (medians, microseconds;
the key deletion in milliseconds). Starts its own etcd unless ETCD_ENDPOINTS is set.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import threading
import time

import etcd_recipes
from etcd_recipes import sync
from etcd_recipes.testing import EtcdCluster

ROUNDS = 7
N = 300


def median_us(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1e6, 1)


async def async_round(client: etcd_recipes.Client) -> tuple[float, float]:
    t0 = time.perf_counter()
    for _ in range(N):
        await client.get("k")
    get = (time.perf_counter() - t0) / N
    lock = client.lock("l", ttl=10)
    t0 = time.perf_counter()
    for _ in range(N // 10):
        await (await lock.acquire()).release()
    return get, (time.perf_counter() - t0) / (N // 10)


def sync_round(client: sync.Client) -> tuple[float, float]:
    t0 = time.perf_counter()
    for _ in range(N):
        client.get("k")
    get = (time.perf_counter() - t0) / N
    lock = client.lock("l", ttl=10)
    t0 = time.perf_counter()
    for _ in range(N // 10):
        lock.acquire().release()
    return get, (time.perf_counter() - t0) / (N // 10)


def key_gone_after_interrupt(client: sync.Client) -> float:
    """Seconds from the KeyboardInterrupt reaching the caller to the waiter's key being gone."""
    holder = client.lock("intr", ttl=10).acquire()
    with client.config("intr/", prefix=True) as view:

        def interrupt() -> None:
            while len(view.keys()) < 2:
                time.sleep(0.001)
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=interrupt).start()
        try:
            client.lock("intr", ttl=10).acquire()
        except KeyboardInterrupt:
            t0 = time.perf_counter()
        while len(view.keys()) > 1:
            time.sleep(0.0005)
        gone = time.perf_counter() - t0
    holder.release()
    return gone


def main() -> None:
    cluster = None
    endpoints = os.environ.get("ETCD_ENDPOINTS")
    if not endpoints:
        cluster = EtcdCluster.start(1)
        eps: list[str] = cluster.endpoints
    else:
        eps = endpoints.split(",")
    results: dict[str, list[float]] = {"async_get": [], "sync_get": [], "async_lock": [], "sync_lock": []}
    aclient = asyncio.run(_connect(eps))
    with sync.Client.connect(eps, namespace="bench/") as sclient:
        sclient.put("k", "v")
        loop = asyncio.new_event_loop()
        for _ in range(ROUNDS):
            g, lk = loop.run_until_complete(async_round(aclient))
            results["async_get"].append(g)
            results["async_lock"].append(lk)
            g, lk = sync_round(sclient)
            results["sync_get"].append(g)
            results["sync_lock"].append(lk)
        loop.run_until_complete(_close(aclient))
        loop.close()
        gone = [key_gone_after_interrupt(sclient) for _ in range(5)]
    out: dict[str, float] = {k: median_us(v) for k, v in results.items()}
    out["sync_get_overhead_us"] = round(out["sync_get"] - out["async_get"], 1)
    out["key_gone_after_interrupt_ms"] = round(statistics.median(gone) * 1e3, 2)
    print(json.dumps(out))
    if cluster is not None:
        cluster.close()


async def _connect(eps: list[str]) -> etcd_recipes.Client:
    return await etcd_recipes.Client.connect(eps, namespace="bench/")


async def _close(client: etcd_recipes.Client) -> None:
    await client.close()


if __name__ == "__main__":
    main()
