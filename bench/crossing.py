"""Where the time of one Python K3 put goes: the asyncio face against the same etcd, split
into the synchronous part of the call (argument conversion, handing the request to the
tokio runtime), the wait for the result, and what waking an asyncio loop from another
thread costs on its own: through `call_soon_threadsafe`, and through a socket the loop
watches with `add_reader` (core's results come back from a tokio thread that way: the
binding's per-loop completion queue).

    bench/.venv/bin/python bench/crossing.py [--endpoints a,b]    one JSON line (medians, us)

Without --endpoints it starts an etcd of its own. It also runs the Rust bench's K3 (ours
through core, and the raw etcd-client crate) against the same etcd first, so `put_us`
minus `rust_core_put_us` is what the crossing into Python costs. Where that time goes, by
stack (Python and native frames of every thread):

    bench/.venv/bin/py-spy record --native --threads --format raw -o /tmp/k3.txt -- \
        bench/.venv/bin/python bench/crossing.py
    python3 bench/spy_summary.py /tmp/k3.txt
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import threading
import time

import etcd_recipes
from common import SEQ_PUTS, args


async def loop_wakeup_us(n: int = 2000) -> float:
    """A thread sets an asyncio future through call_soon_threadsafe: us until the awaiting
    coroutine runs (the hop every result from a tokio thread makes)."""
    loop = asyncio.get_running_loop()
    go, samples = threading.Event(), []
    box: list[asyncio.Future[float]] = []

    def other() -> None:
        for _ in range(n):
            go.wait()
            go.clear()
            fut = box[0]
            loop.call_soon_threadsafe(fut.set_result, time.perf_counter())

    th = threading.Thread(target=other, daemon=True)
    th.start()
    for _ in range(n):
        box[:] = [loop.create_future()]
        go.set()
        sent = await box[0]
        samples.append((time.perf_counter() - sent) * 1e6)
    th.join()
    return statistics.median(samples)


async def reader_wakeup_us(n: int = 2000) -> float:
    """A thread writes a byte to a socket the loop watches (`add_reader`): us until the
    awaiting coroutine runs (how the binding's completion queue wakes a loop)."""
    loop = asyncio.get_running_loop()
    r, w = socket.socketpair()
    r.setblocking(False)
    go, samples = threading.Event(), []
    box: list[asyncio.Future[float]] = []
    sent = [0.0]

    def readable() -> None:
        r.recv(64)
        if box and not box[0].done():
            box[0].set_result(sent[0])

    def other() -> None:
        for _ in range(n):
            go.wait()
            go.clear()
            sent[0] = time.perf_counter()
            w.send(b"x")

    loop.add_reader(r.fileno(), readable)
    th = threading.Thread(target=other, daemon=True)
    th.start()
    try:
        for _ in range(n):
            box[:] = [loop.create_future()]
            go.set()
            t = await box[0]
            samples.append((time.perf_counter() - t) * 1e6)
    finally:
        th.join()
        loop.remove_reader(r.fileno())
        r.close()
        w.close()
    return statistics.median(samples)


def rust_k3(eps: list[str], side: str) -> float:
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "target"))
    out = subprocess.run([os.path.join(target, "release", "bench"), "--endpoints", ",".join(eps), "--side", side, "K3"],
                         capture_output=True, text=True, check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["value"])


async def main(eps: list[str]) -> None:
    rust = {"rust_raw_put_us": rust_k3(eps, "raw"), "rust_core_put_us": rust_k3(eps, "ours")}
    c = await etcd_recipes.Client.connect(eps)
    for i in range(200):
        await c.put(f"bench/crossing/warm/{i}", "v")
    call, wait, total = [], [], []
    for i in range(SEQ_PUTS):
        t0 = time.perf_counter()
        fut = c.put(f"bench/crossing/{i}", "v")
        t1 = time.perf_counter()
        await fut
        t2 = time.perf_counter()
        call.append((t1 - t0) * 1e6)
        wait.append((t2 - t1) * 1e6)
        total.append((t2 - t0) * 1e6)
    gets = []
    for i in range(SEQ_PUTS):
        t0 = time.perf_counter()
        await c.get(f"bench/crossing/{i}")
        gets.append((time.perf_counter() - t0) * 1e6)
    wake, reader_wake = await loop_wakeup_us(), await reader_wakeup_us()
    await c.close()
    med = statistics.median
    print(json.dumps({"side": "ours", "lang": "python", "workload": "K3-crossing", **rust, "put_us": round(med(total), 1),
                      "put_call_us": round(med(call), 1), "put_wait_us": round(med(wait), 1), "get_us": round(med(gets), 1),
                      "loop_wakeup_from_thread_us": round(wake, 1), "loop_wakeup_reader_us": round(reader_wake, 1)}))


if __name__ == "__main__":
    endpoints, _ = args()
    cluster = None
    if not endpoints:
        from etcd_recipes.testing import EtcdCluster

        cluster = EtcdCluster.start(1)
        endpoints = cluster.endpoints
    try:
        asyncio.run(main(endpoints))
    finally:
        if cluster is not None:
            cluster.close()
