"""The bench card from Python through our asyncio face (etcd_recipes).

    python py_ours.py --endpoints a,b K1 [K2 ...]     one JSON line per workload
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter

import etcd_recipes
from common import (C2_READS, D2_INSTANCES, E1_TURNS, E2_KILLS, E2_TTL, EVENTS, F1_TTL, KV_OPS, L1_CYCLES,
                    L2_CYCLES, L2_WORKERS, Q1_ITEMS, R1_CYCLES, R1_READERS, R1_WRITER, R1_WRITERS, S1_CYCLES,
                    S1_PERMITS, S1_WORKERS, SEQ_PUTS, VALUE, W1_CONSUMERS, W1_ITEMS, W1_KILL_AFTER, Phases, args,
                    emit, in_flight, median)

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


async def e2_child(c: etcd_recipes.Client) -> None:
    """E2's old leader: campaigns with TTL 2 s, says so, and waits to be killed."""
    s = await c.session(ttl=E2_TTL)
    lead = await s.election(os.environ["BENCH_E2_NAME"]).campaign("old")
    print(f"leader {lead.lease_id}", flush=True)
    await asyncio.Event().wait()


async def e2(c: etcd_recipes.Client, eps: list[str]) -> None:
    """A child process leads (TTL 2 s), ours (TTL 2 s) queues, the child is SIGKILLed: ms until
    ours leads. ok: etcd then reports the old leader's lease gone (we never lead before it expired)."""
    times, ok, early = [], True, 0
    for turn in range(E2_KILLS):
        name = f"{TAG}/e2-{turn}"
        child = await asyncio.create_subprocess_exec(
            sys.executable, os.path.abspath(__file__), "--endpoints", ",".join(eps), "E2CHILD",
            stdout=asyncio.subprocess.PIPE, env={**os.environ, "BENCH_E2_NAME": name})
        try:
            while not (line := (await child.stdout.readline()).decode()).startswith("leader "):
                if not line:
                    raise RuntimeError("the E2 child ended before leading")
            old = int(line.split()[1])
            s = await c.session(ttl=E2_TTL)

            async def campaign() -> tuple[etcd_recipes.Leadership, float]:
                lead = await s.election(name).campaign("new")
                return lead, time.perf_counter()

            waiting = asyncio.create_task(campaign())
            await asyncio.sleep(0.05)  # ours is queued
            t = time.perf_counter()
            child.kill()
            lead, at = await waiting
            if await c.lease_exists(old):
                early += 1
            ok &= lead.is_leader
            times.append((at - t) * 1e3)
            await lead.resign()
            await s.close()
        finally:
            if child.returncode is None:
                child.kill()
            await child.wait()
    emit(SIDE, "E2", median(times), "ms", ok and early == 0, max_ms=round(max(times), 2), kills=len(times),
         led_before_expiry=early)


async def s1(eps: list[str]) -> None:
    """12 workers, each its own client and session, 50 cycles on a 3-permit semaphore; inside,
    a counter in etcd goes up and down (atomic add): above 3 is an overlap."""
    clients = [await etcd_recipes.Client.connect(eps) for _ in range(S1_WORKERS)]
    sessions = [await c.session(ttl=10) for c in clients]
    name, inside = f"{TAG}/s1", f"{TAG}/s1-inside"
    over, most = 0, 0

    async def worker(c: etcd_recipes.Client, s: etcd_recipes.Session) -> None:
        nonlocal over, most
        sem, n = s.semaphore(name, S1_PERMITS), c.counter(inside)
        for _ in range(S1_CYCLES):
            g = await sem.acquire()
            v = await n.add(1)
            most = max(most, v)
            over += v > S1_PERMITS
            over += await n.add(-1) < 0
            await g.release()

    t = time.perf_counter()
    await asyncio.gather(*(worker(c, s) for c, s in zip(clients, sessions)))
    rate = S1_WORKERS * S1_CYCLES / (time.perf_counter() - t)
    end = await clients[0].counter(inside).get()
    for s, c in zip(sessions, clients):
        await s.close()
        await c.close()
    emit(SIDE, "S1", rate, "acquisitions/s", over == 0 and end == 0, most_inside=most)


async def r1(eps: list[str]) -> None:
    """8 readers + 2 writers, each its own client and session, 100 cycles on one RwLock;
    inside, an occupancy counter in etcd (+1 a reader, +1000 a writer, atomic add): a reader
    seeing a writer or a writer seeing anyone is an overlap."""
    n_all = R1_READERS + R1_WRITERS
    clients = [await etcd_recipes.Client.connect(eps) for _ in range(n_all)]
    sessions = [await c.session(ttl=10) for c in clients]
    name, state = f"{TAG}/r1", f"{TAG}/r1-state"
    overlaps = 0

    async def worker(i: int, c: etcd_recipes.Client, s: etcd_recipes.Session) -> None:
        nonlocal overlaps
        rw, n, writer = s.rwlock(name), c.counter(state), i < R1_WRITERS
        for _ in range(R1_CYCLES):
            if writer:
                g = await rw.write()
                overlaps += await n.add(R1_WRITER) != R1_WRITER
                await n.add(-R1_WRITER)
            else:
                g = await rw.read()
                overlaps += await n.add(1) >= R1_WRITER
                await n.add(-1)
            await g.release()

    t = time.perf_counter()
    await asyncio.gather(*(worker(i, c, s) for i, (c, s) in enumerate(zip(clients, sessions))))
    rate = n_all * R1_CYCLES / (time.perf_counter() - t)
    end = await clients[0].counter(state).get()
    for s, c in zip(sessions, clients):
        await s.close()
        await c.close()
    emit(SIDE, "R1", rate, "cycles/s", overlaps == 0 and end == 0, overlaps=overlaps)


async def q1(eps: list[str]) -> None:
    """2 producers enqueue 2,500 values each, 2 consumers dequeue until all 5,000 are taken,
    each its own client; items/s from the first enqueue to the last dequeue."""
    producers = [await etcd_recipes.Client.connect(eps) for _ in range(2)]
    consumers = [await etcd_recipes.Client.connect(eps) for _ in range(2)]
    name = f"{TAG}/q1"
    seen: Counter[bytes] = Counter()
    done = asyncio.Event()
    finished = 0.0

    async def consume(c: etcd_recipes.Client) -> None:
        nonlocal finished
        q = c.queue(name)
        while not done.is_set():
            try:
                item = await q.dequeue(timeout=0.1)
            except etcd_recipes.LockTimeoutError:
                continue
            seen[item.value] += 1
            if sum(seen.values()) == Q1_ITEMS:
                finished = time.perf_counter()
                done.set()

    async def produce(p: int, c: etcd_recipes.Client) -> None:
        q = c.queue(name)
        for k in range(Q1_ITEMS // 2):
            await q.enqueue(f"p{p}-{k}")

    t = time.perf_counter()
    await asyncio.gather(*(consume(c) for c in consumers), *(produce(p, c) for p, c in enumerate(producers)))
    rate = Q1_ITEMS / (finished - t)
    left = await producers[0].queue(name).length()
    dups = sum(n - 1 for n in seen.values())
    for c in producers + consumers:
        await c.close()
    emit(SIDE, "Q1", rate, "items/s", len(seen) == Q1_ITEMS and dups == 0 and left == 0, distinct=len(seen),
         duplicates=dups, left=left)


async def w1(c: etcd_recipes.Client, eps: list[str]) -> None:
    """One producer puts 2,000 items (16 in flight) while 4 consumers (each its own client
    and session) receive and ack; after 100 acks the first consumer takes one more item and
    is killed holding it (its lease revoked by another client, its task cancelled, its client
    closed). items/s until the last ack. ok: every item acked exactly once or dead-lettered."""
    name = f"{TAG}/w1"
    producer = await etcd_recipes.Client.connect(eps)
    clients = [await etcd_recipes.Client.connect(eps) for _ in range(W1_CONSUMERS)]
    sessions = [await cl.session(ttl=10) for cl in clients]
    acked: Counter[str] = Counter()
    redelivered = 0
    held: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()
    finished = 0.0

    async def consume(i: int, s: etcd_recipes.Session) -> None:
        nonlocal redelivered, finished
        q, mine = clients[i].work_queue(name, session=s, max_deliveries=5), 0
        while not done.is_set():
            try:
                item = await q.receive(timeout=0.1)
            except etcd_recipes.LockTimeoutError:
                continue
            if i == 0 and mine == W1_KILL_AFTER:
                held.set_result((item.lease_id, item.id))  # killed holding it: parked until cancelled
                await asyncio.Event().wait()
            redelivered += item.deliveries > 1
            try:
                await item.ack()
            except etcd_recipes.FencedError:
                continue
            mine += 1
            acked[item.id] += 1
            if sum(acked.values()) == W1_ITEMS:
                finished = time.perf_counter()
                done.set()

    pq = producer.work_queue(name)

    async def put(k: int) -> bool:
        await pq.put(f"item-{k}")
        return True

    t = time.perf_counter()
    tasks = [asyncio.create_task(consume(i, s)) for i, s in enumerate(sessions)]
    await in_flight(W1_ITEMS, put, 16)
    lease, held_id = await held
    await producer.revoke_lease(lease)
    tasks[0].cancel()
    await asyncio.gather(tasks[0], return_exceptions=True)
    await clients[0].close()
    await asyncio.gather(*tasks[1:])
    rate = W1_ITEMS / (finished - t)
    q = producer.work_queue(name)
    dead, left = len(await q.dead_letters()), await q.length()
    twice = sum(1 for n in acked.values() if n > 1)
    for s in sessions[1:]:
        await s.close()
    for cl in clients[1:] + [producer]:
        await cl.close()
    ok = len(acked) + dead == W1_ITEMS and twice == 0 and left == 0 and (acked[held_id] == 1 or dead > 0)
    emit(SIDE, "W1", rate, "items/s", ok, acked=len(acked), acked_twice=twice, dead_lettered=dead,
         redelivered=redelivered, killed_item_acked=acked[held_id], items_left=left)


async def f1(c: etcd_recipes.Client) -> None:
    """Puts and lock cycles (a session of TTL 3 s) in loops while the driver SIGSTOPs a member."""
    ph = Phases()
    s, lost = await c.session(ttl=F1_TTL), 0
    key = f"{TAG}/f1"

    async def lock_cycle(i: int) -> None:
        nonlocal s, lost
        if not s.is_alive:
            lost += 1
            s = await c.session(ttl=F1_TTL)
        g = await s.lock(f"{key}-lock").acquire(timeout=10)
        try:
            await g.put(f"{key}-locked", str(i))
        finally:
            await g.release()

    puts = asyncio.create_task(ph.loop(lambda i: c.put(f"{key}/put", str(i))))
    locks = asyncio.create_task(ph.loop(lock_cycle))
    await ph.wait_for_end()
    puts, locks = await puts, await locks
    lost += not s.is_alive
    await s.close()
    line = ph.line(puts, locks, lost)
    emit(SIDE, "F1", line.pop("value"), "ms p99", line.pop("ok"), **line)


async def main() -> None:
    eps, work = args()
    c = await etcd_recipes.Client.connect(eps)
    if work == ["E2CHILD"]:
        return await e2_child(c)
    for i in range(200):  # warm the connection
        await c.put(f"{TAG}/warm/{i}", "v")
    for w in work:
        if w == "L2":
            await l2(eps)
        elif w == "D2":
            await d2(c, eps)
        elif w == "D2V":
            await d2v(eps)
        elif w in ("E2", "W1"):
            await {"E2": e2, "W1": w1}[w](c, eps)
        elif w in ("S1", "R1", "Q1"):
            await {"S1": s1, "R1": r1, "Q1": q1}[w](eps)
        elif w == "F1":
            await f1(c)
        else:
            await {"K1": k1, "K2": k2, "K3": k3, "L1": l1, "E1": e1, "D1": d1, "C1": c1, "C2": c2}[w](c)
    await c.close()


if __name__ == "__main__":
    asyncio.run(main())
