"""The bench card from Python through our asyncio face (etcd_recipes).

    python py_ours.py --endpoints a,b K1 [K2 ...]     one JSON line per workload
"""

from __future__ import annotations

import asyncio
import os
import time

import etcd_recipes
from common import (C2_READS, D2_INSTANCES, E1_TURNS, EVENTS, KV_OPS, L1_CYCLES, L2_CYCLES, L2_WORKERS,
                    SEQ_PUTS, VALUE, args, emit, in_flight, median)

SIDE = "ours"
TAG = f"bench/py-{os.getpid()}"


async def k1(c: etcd_recipes.Client) -> None:
    async def put(i: int) -> bool:
        await c.put(f"{TAG}/k1/{i}", VALUE)
        return True

    rate, ok = await in_flight(KV_OPS, put)
    emit(SIDE, "K1", rate, "ops/s", ok)


async def k2(c: etcd_recipes.Client) -> None:
    async def get(i: int) -> bool:
        return await c.get(f"bench/k2/{i}") is not None

    rate, ok = await in_flight(KV_OPS, get)
    emit(SIDE, "K2", rate, "ops/s", ok)


async def k3(c: etcd_recipes.Client) -> None:
    lat = []
    for i in range(SEQ_PUTS):
        t = time.perf_counter()
        await c.put(f"{TAG}/k3/{i}", "v")
        lat.append((time.perf_counter() - t) * 1e6)
    emit(SIDE, "K3", median(lat), "us", True)


async def l1(c: etcd_recipes.Client) -> None:
    async with await c.session(ttl=10) as s:
        lock = s.lock(f"{TAG}/l1")
        t = time.perf_counter()
        for _ in range(L1_CYCLES):
            g = await lock.acquire()
            await g.release()
        emit(SIDE, "L1", L1_CYCLES / (time.perf_counter() - t), "cycles/s", True)


async def l2(eps: list[str]) -> None:
    clients = [await etcd_recipes.Client.connect(eps) for _ in range(L2_WORKERS)]
    sessions = [await c.session(ttl=10) for c in clients]
    counter = f"{TAG}/l2-counter"
    await clients[0].put(counter, "0")

    async def worker(c: etcd_recipes.Client, s: etcd_recipes.Session) -> None:
        lock = s.lock(f"{TAG}/l2")
        for _ in range(L2_CYCLES):
            g = await lock.acquire()
            v = int(await c.get(counter) or b"0")
            await c.put(counter, str(v + 1))
            await g.release()

    t = time.perf_counter()
    await asyncio.gather(*(worker(c, s) for c, s in zip(clients, sessions)))
    rate = L2_WORKERS * L2_CYCLES / (time.perf_counter() - t)
    end = await clients[0].get(counter)
    for s, c in zip(sessions, clients):
        await s.close()
        await c.close()
    emit(SIDE, "L2", rate, "handoffs/s", end == str(L2_WORKERS * L2_CYCLES).encode(), counter=int(end or 0))


async def e1(c: etcd_recipes.Client) -> None:
    s1, s2 = await c.session(ttl=10), await c.session(ttl=10)
    es = [s1.election(f"{TAG}/e1"), s2.election(f"{TAG}/e1")]
    leader, who, times, resigns = await es[0].campaign("a"), 0, [], []

    async def campaign(e: etcd_recipes.Election) -> tuple[etcd_recipes.Leadership, float]:
        lead = await e.campaign("b")
        return lead, time.perf_counter()

    for _ in range(E1_TURNS):
        waiting = asyncio.create_task(campaign(es[1 - who]))
        await asyncio.sleep(0.02)  # the other is queued
        t = time.perf_counter()
        await leader.resign()
        resigns.append((time.perf_counter() - t) * 1e3)
        leader, at = await waiting
        times.append((at - t) * 1e3)
        who = 1 - who
    await leader.resign()
    await s1.close()
    await s2.close()
    emit(SIDE, "E1", median(times), "ms", True, resign_ms=round(median(resigns), 3))


async def d1(c: etcd_recipes.Client) -> None:
    service = f"bench-py-d1-{os.getpid()}"
    view = await c.discover(service)
    events = view.events()
    times = []
    for i in range(EVENTS):
        t = time.perf_counter()
        reg = await c.register(service, f"i{i}", "127.0.0.1:1", ttl=30)
        async for ev in events:
            if ev.kind == "up" and ev.id == f"i{i}":
                break
        times.append((time.perf_counter() - t) * 1e3)
        await reg.close()
        async for ev in events:
            if ev.kind == "down" and ev.id == f"i{i}":
                break
    view.close()
    emit(SIDE, "D1", median(times), "ms", True)


async def d2(c: etcd_recipes.Client, eps: list[str]) -> None:
    service = f"bench-py-d2-{os.getpid()}"
    regs: list[etcd_recipes.Registration] = []

    async def register(i: int) -> bool:
        regs.append(await c.register(service, f"i{i}", "127.0.0.1:1", ttl=30))
        return True

    t = time.perf_counter()
    await in_flight(D2_INSTANCES, register)
    register_s = time.perf_counter() - t
    fresh = await etcd_recipes.Client.connect(eps)
    t = time.perf_counter()
    view = await fresh.discover(service)
    load_s = time.perf_counter() - t
    seen = len(view.instances())
    view.close()
    await fresh.close()
    async def close(i: int) -> bool:
        await regs[i].close()
        return True

    await in_flight(len(regs), close)
    emit(SIDE, "D2", register_s, "s", seen == D2_INSTANCES, load_s=round(load_s, 4), seen=seen)


async def d2v(eps: list[str]) -> None:
    """A fresh client's view of the 10,000 instances the driver wrote under bench-d2v/."""
    fresh = await etcd_recipes.Client.connect(eps)
    t = time.perf_counter()
    view = await fresh.discover("bench-d2v")
    secs = time.perf_counter() - t
    seen = len(view.instances())
    view.close()
    await fresh.close()
    emit(SIDE, "D2V", secs, "s", seen == 10_000, seen=seen)


async def c1(c: etcd_recipes.Client) -> None:
    key = f"{TAG}/c1"
    cfg = await c.config(key)
    changes = cfg.changes()
    times = []
    for i in range(EVENTS):
        v = f"v{i}".encode()
        t = time.perf_counter()
        await c.put(key, v)
        async for _ in changes:
            if cfg.get(key) == v:
                break
        times.append((time.perf_counter() - t) * 1e3)
    cfg.close()
    emit(SIDE, "C1", median(times), "ms", True)


async def c2(c: etcd_recipes.Client) -> None:
    key = f"{TAG}/c2"
    await c.put(key, "value")
    cfg = await c.config(key)
    plain = {key: b"value"}  # what a hand-rolled watch would feed
    for name, get in (("ours", cfg.get), ("dict", plain.get)):
        hits = 0
        t = time.perf_counter()
        for _ in range(C2_READS):
            if get(key) is not None:
                hits += 1
        emit(name, "C2", C2_READS / (time.perf_counter() - t), "reads/s", hits == C2_READS)
    cfg.close()


async def main() -> None:
    eps, work = args()
    c = await etcd_recipes.Client.connect(eps)
    for i in range(200):  # warm the connection
        await c.put(f"{TAG}/warm/{i}", "v")
    for w in work:
        if w == "L2":
            await l2(eps)
        elif w == "D2":
            await d2(c, eps)
        elif w == "D2V":
            await d2v(eps)
        else:
            await {"K1": k1, "K2": k2, "K3": k3, "L1": l1, "E1": e1, "D1": d1, "C1": c1, "C2": c2}[w](c)
    await c.close()


if __name__ == "__main__":
    asyncio.run(main())
