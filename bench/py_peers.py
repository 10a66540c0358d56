"""The bench card from Python through the peers a user would otherwise pick:
python-etcd3 (`etcd3`, blocking, threads for requests in flight), `aetcd` (asyncio) and
etcd-client-py (`etcd_client`, asyncio over Rust). Workloads a peer has no recipe for
print n/a with the reason.

    python py_peers.py --side etcd3|aetcd|etcd-client-py --endpoints a,b K1 [K2 ...]
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from common import (EVENTS, F1_TTL, IN_FLIGHT, KV_OPS, L1_CYCLES, L2_CYCLES, L2_WORKERS, SEQ_PUTS, VALUE, Phases,
                    args, emit, in_flight, median, na)

TAG = f"bench/peer-{os.getpid()}"
NO_ELECTION = "no leader election in this client"
NO_DISCOVERY = "no service discovery in this client"
NO_VIEW = "no config view in this client (the plain dict row is the peer)"
NO_RECIPE = {"S1": "no semaphore in this client", "R1": "no read-write lock in this client",
             "Q1": "no queue in this client", "W1": "no work queue in this client"}


def missing(side: str, w: str) -> None:
    """n/a with the reason, for a workload the peer has no recipe for."""
    if w in ("E1", "E2"):
        na(side, w, NO_ELECTION)
    elif w in NO_RECIPE:
        na(side, w, NO_RECIPE[w])
    else:
        na(side, w, NO_VIEW if w == "C2" else NO_DISCOVERY)


def f1_sync(side: str, put, lock_cycle, lease_alive, note: str) -> None:
    """F1 for a blocking client: puts and lock cycles in two threads while the driver pauses
    a member; `lease_alive()` says whether the lock's TTL 3 s lease survived."""
    ph = Phases()

    def loop(op) -> list:
        out, i = [], 0
        while not ph.stopped:
            t0 = time.perf_counter()
            try:
                op(i)
                failed = False
            except Exception:
                failed = True
            out.append((t0, (time.perf_counter() - t0) * 1e3, failed))
            if failed:
                time.sleep(0.005)
            i += 1
        return out

    with ThreadPoolExecutor(2) as pool:
        puts, locks = pool.submit(loop, put), pool.submit(loop, lock_cycle)
        asyncio.run(ph.wait_for_end())
        line = ph.line(puts.result(), locks.result(), 0 if lease_alive() else 1)
    emit(side, "F1", line.pop("value"), "ms p99", line.pop("ok"), note=note, **line)


def host_port(ep: str) -> tuple[str, int]:
    host, port = ep.replace("http://", "").rsplit(":", 1)
    return host, int(port)


# python-etcd3: blocking; 64 in flight means 64 threads.
def etcd3_side(eps: list[str], work: list[str]) -> None:
    os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
    import etcd3

    side = "python-etcd3"
    host, port = host_port(eps[0])
    c = etcd3.client(host, port)
    for i in range(200):
        c.put(f"{TAG}/warm/{i}", "v")

    def rate_of(op) -> tuple[float, bool]:
        t = time.perf_counter()
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            ok = all(pool.map(op, range(KV_OPS)))
        return KV_OPS / (time.perf_counter() - t), ok

    def lock_cycles(client, name: str, n: int, inside=None) -> None:
        lock = client.lock(name, ttl=10)
        for _ in range(n):
            if not lock.acquire(timeout=None):
                raise RuntimeError("python-etcd3: acquire returned False")
            if inside:
                inside()
            lock.release()

    for w in work:
        if w == "K1":
            rate, ok = rate_of(lambda i: c.put(f"{TAG}/k1/{i}", VALUE) is not None)
            emit(side, w, rate, "ops/s", ok)
        elif w == "K2":
            rate, ok = rate_of(lambda i: c.get(f"bench/k2/{i}")[0] is not None)
            emit(side, w, rate, "ops/s", ok)
        elif w == "K3":
            lat = []
            for i in range(SEQ_PUTS):
                t = time.perf_counter()
                c.put(f"{TAG}/k3/{i}", "v")
                lat.append((time.perf_counter() - t) * 1e6)
            emit(side, w, median(lat), "us", True)
        elif w == "L1":
            t = time.perf_counter()
            lock_cycles(c, f"{TAG}-l1", L1_CYCLES)
            emit(side, w, L1_CYCLES / (time.perf_counter() - t), "cycles/s", True)
        elif w == "L2":
            counter = f"{TAG}/l2-counter"
            c.put(counter, "0")
            clients = [etcd3.client(host, port) for _ in range(L2_WORKERS)]

            def worker(cl) -> None:
                def inside() -> None:
                    cl.put(counter, str(int(cl.get(counter)[0]) + 1))

                lock_cycles(cl, f"{TAG}-l2", L2_CYCLES, inside)

            threads = [threading.Thread(target=worker, args=(cl,)) for cl in clients]
            t = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            rate = L2_WORKERS * L2_CYCLES / (time.perf_counter() - t)
            end = c.get(counter)[0]
            emit(side, w, rate, "handoffs/s", end == str(L2_WORKERS * L2_CYCLES).encode(), counter=int(end or 0))
        elif w == "C1":
            key = f"{TAG}/c1"
            events, cancel = c.watch(key)
            times = []
            for i in range(EVENTS):
                v = f"v{i}".encode()
                t = time.perf_counter()
                c.put(key, v)
                while next(events).value != v:
                    pass
                times.append((time.perf_counter() - t) * 1e3)
            cancel()
            emit(side, w, median(times), "ms", True, note="raw watch, no view")
        elif w == "F1":
            # python-etcd3 talks to one host; its lock holds a lease of its own (TTL 3 s),
            # refreshed by hand while held.
            lock = c.lock(f"{TAG}-f1", ttl=F1_TTL)
            lease = c.lease(F1_TTL)
            stop = threading.Event()

            def refresh() -> None:
                while not stop.wait(1):
                    try:
                        lease.refresh()
                    except Exception:
                        pass

            threading.Thread(target=refresh, daemon=True).start()

            def lock_cycle(i: int) -> None:
                if not lock.acquire(timeout=10):
                    raise TimeoutError("lock")
                try:
                    c.put(f"{TAG}/f1-locked", str(i))
                finally:
                    lock.release()

            def alive() -> bool:
                stop.set()
                return lease.remaining_ttl > 0

            f1_sync(side, lambda i: c.put(f"{TAG}/f1/put", str(i)), lock_cycle, alive,
                    note="one endpoint (the client takes one host); lease refreshed every 1 s")
        else:
            missing(side, w)


# aetcd: asyncio, one channel.
async def aetcd_side(eps: list[str], work: list[str]) -> None:
    import aetcd

    side = "aetcd"
    host, port = host_port(eps[0])
    c = aetcd.Client(host, port)
    for i in range(200):
        await c.put(f"{TAG}/warm/{i}".encode(), b"v")

    async def lock_cycles(client, name: str, n: int, inside=None) -> None:
        for _ in range(n):
            lock = client.lock(name.encode(), ttl=10)
            await lock.acquire()
            if inside:
                await inside()
            await lock.release()

    for w in work:
        if w == "K1":
            async def put(i: int) -> bool:
                return await c.put(f"{TAG}/k1/{i}".encode(), VALUE) is not None

            rate, ok = await in_flight(KV_OPS, put)
            emit(side, w, rate, "ops/s", ok)
        elif w == "K2":
            async def get(i: int) -> bool:
                return await c.get(f"bench/k2/{i}".encode()) is not None

            rate, ok = await in_flight(KV_OPS, get)
            emit(side, w, rate, "ops/s", ok)
        elif w == "K3":
            lat = []
            for i in range(SEQ_PUTS):
                t = time.perf_counter()
                await c.put(f"{TAG}/k3/{i}".encode(), b"v")
                lat.append((time.perf_counter() - t) * 1e6)
            emit(side, w, median(lat), "us", True)
        elif w == "L1":
            t = time.perf_counter()
            await lock_cycles(c, f"{TAG}-l1", L1_CYCLES)
            emit(side, w, L1_CYCLES / (time.perf_counter() - t), "cycles/s", True)
        elif w == "L2":
            counter = f"{TAG}/l2-counter".encode()
            await c.put(counter, b"0")
            clients = [aetcd.Client(host, port) for _ in range(L2_WORKERS)]

            async def worker(cl) -> None:
                async def inside() -> None:
                    got = await cl.get(counter)
                    await cl.put(counter, str(int(got.value) + 1).encode())

                await lock_cycles(cl, f"{TAG}-l2", L2_CYCLES, inside)

            t = time.perf_counter()
            await asyncio.gather(*(worker(cl) for cl in clients))
            rate = L2_WORKERS * L2_CYCLES / (time.perf_counter() - t)
            end = (await c.get(counter)).value
            for cl in clients:
                await cl.close()
            emit(side, w, rate, "handoffs/s", end == str(L2_WORKERS * L2_CYCLES).encode(), counter=int(end or 0))
        elif w == "C1":
            key = f"{TAG}/c1".encode()
            watch = await c.watch(key)
            times = []
            it = watch.__aiter__()
            for i in range(EVENTS):
                v = f"v{i}".encode()
                t = time.perf_counter()
                await c.put(key, v)
                while (await it.__anext__()).kv.value != v:
                    pass
                times.append((time.perf_counter() - t) * 1e3)
            await watch.cancel()
            emit(side, w, median(times), "ms", True, note="raw watch, no view")
        elif w == "F1":
            ph = Phases()

            async def lock_cycle(i: int) -> None:
                lock = c.lock(f"{TAG}-f1".encode(), ttl=F1_TTL)
                await asyncio.wait_for(lock.acquire(), 10)
                try:
                    await c.put(f"{TAG}/f1-locked".encode(), str(i).encode())
                finally:
                    await lock.release()

            puts = asyncio.create_task(ph.loop(lambda i: c.put(f"{TAG}/f1/put".encode(), str(i).encode())))
            locks = asyncio.create_task(ph.loop(lock_cycle))
            await ph.wait_for_end()
            line = ph.line(await puts, await locks, None)
            emit(side, w, line.pop("value"), "ms p99", line.pop("ok"),
                 note="one endpoint (the client takes one host); a lease per lock cycle", **line)
        else:
            missing(side, w)
    await c.close()


# etcd-client-py: asyncio over the Rust etcd-client crate; a Communicator per `connect()`.
async def etcd_client_side(eps: list[str], work: list[str]) -> None:
    import etcd_client

    side = "etcd-client-py"
    c = etcd_client.Client(eps)
    async with c.connect() as comm:
        for i in range(200):
            await comm.put(f"{TAG}/warm/{i}".encode(), b"v")
        for w in work:
            if w == "K1":
                async def put(i: int) -> bool:
                    await comm.put(f"{TAG}/k1/{i}".encode(), VALUE)
                    return True

                rate, ok = await in_flight(KV_OPS, put)
                emit(side, w, rate, "ops/s", ok)
            elif w == "K2":
                async def get(i: int) -> bool:
                    return await comm.get(f"bench/k2/{i}".encode()) is not None

                rate, ok = await in_flight(KV_OPS, get)
                emit(side, w, rate, "ops/s", ok)
            elif w == "K3":
                lat = []
                for i in range(SEQ_PUTS):
                    t = time.perf_counter()
                    await comm.put(f"{TAG}/k3/{i}".encode(), b"v")
                    lat.append((time.perf_counter() - t) * 1e6)
                emit(side, w, median(lat), "us", True)
            elif w in ("L1", "L2"):
                await etcd_client_locks(etcd_client, eps, comm, side, w)
            elif w == "C1":
                key = f"{TAG}/c1".encode()
                seen: asyncio.Queue[bytes] = asyncio.Queue()

                async def reader() -> None:  # the watch starts on the first __anext__
                    async for ev in comm.watch(key):
                        seen.put_nowait(bytes(ev.value))

                task = asyncio.create_task(reader())
                await asyncio.sleep(0.3)  # no "created" signal; let the watch start
                times = []
                for i in range(EVENTS):
                    v = f"v{i}".encode()
                    t = time.perf_counter()
                    await comm.put(key, v)
                    while await seen.get() != v:
                        pass
                    times.append((time.perf_counter() - t) * 1e3)
                task.cancel()
                emit(side, w, median(times), "ms", True, note="raw watch, no view")
            elif w == "F1":
                ph = Phases()
                opt = etcd_client.EtcdLockOption(lock_name=f"{TAG}-f1".encode(), timeout=10, ttl=F1_TTL)

                async def lock_cycle(i: int) -> None:
                    async with c.with_lock(opt) as cm:
                        await cm.put(f"{TAG}/f1-locked".encode(), str(i).encode())

                puts = asyncio.create_task(ph.loop(lambda i: comm.put(f"{TAG}/f1/put".encode(), str(i).encode())))
                locks = asyncio.create_task(ph.loop(lock_cycle))
                await ph.wait_for_end()
                line = ph.line(await puts, await locks, None)
                emit(side, w, line.pop("value"), "ms p99", line.pop("ok"), note="Lock RPC, a connection and lease per cycle", **line)
            else:
                missing(side, w)


async def etcd_client_locks(etcd_client, eps: list[str], comm, side: str, w: str) -> None:
    """L1/L2 through `Client.with_lock` (etcd's Lock RPC; a connection per hold, as its README
    shows: `Communicator.lock` does not return the key that `unlock` needs)."""
    def option(name: str):
        return etcd_client.EtcdLockOption(lock_name=name.encode(), timeout=None, ttl=10)

    if w == "L1":
        c, opt = etcd_client.Client(eps), option(f"{TAG}-l1")
        t = time.perf_counter()
        for _ in range(L1_CYCLES):
            async with c.with_lock(opt):
                pass
        emit(side, w, L1_CYCLES / (time.perf_counter() - t), "cycles/s", True)
        return
    counter = f"{TAG}/l2-counter".encode()
    await comm.put(counter, b"0")

    async def worker() -> None:
        c, opt = etcd_client.Client(eps), option(f"{TAG}-l2")
        for _ in range(L2_CYCLES):
            async with c.with_lock(opt) as cm:
                v = int(bytes(await cm.get(counter)))
                await cm.put(counter, str(v + 1).encode())

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(L2_WORKERS)))
    rate = L2_WORKERS * L2_CYCLES / (time.perf_counter() - t)
    end = bytes(await comm.get(counter))
    emit(side, w, rate, "handoffs/s", end == str(L2_WORKERS * L2_CYCLES).encode(), counter=int(end or 0))


def etcdctl_side(eps: list[str], work: list[str]) -> None:
    """F1's reference: `etcdctl put` in a loop, a process per op, all three endpoints."""
    import subprocess

    ctl = os.environ.get("BENCH_ETCDCTL", "etcdctl")
    env = {**os.environ, "ETCDCTL_API": "3"}
    for w in work:
        if w != "F1":
            na("etcdctl-put", w, "F1 only")
            continue

        def put(i: int) -> None:
            subprocess.run([ctl, f"--endpoints={','.join(eps)}", "put", f"{TAG}/f1/etcdctl", str(i)], check=True,
                           capture_output=True, env=env)

        ph = Phases()
        with ThreadPoolExecutor(1) as pool:
            puts = pool.submit(lambda: asyncio.run(ph.loop(lambda i: asyncio.to_thread(put, i))))
            asyncio.run(ph.wait_for_end())
            line = ph.line(puts.result(), [], None)
        line.update(ok=line["ops"] > 0 and line["value"] is not None, lock_p99_ms=None, lock_after_p99_ms=None)
        print(json.dumps({"side": "etcdctl-put", "lang": "etcdctl", "workload": w, "value": line.pop("value"), "unit": "ms p99",
                          "note": "a process per put, default timeouts", **line}), flush=True)


def main() -> None:
    side = sys.argv[sys.argv.index("--side") + 1]
    del sys.argv[sys.argv.index("--side"):sys.argv.index("--side") + 2]
    eps, work = args()
    if side == "etcd3":
        etcd3_side(eps, work)
    elif side == "aetcd":
        asyncio.run(aetcd_side(eps, work))
    elif side == "etcd-client-py":
        asyncio.run(etcd_client_side(eps, work))
    elif side == "etcdctl":
        etcdctl_side(eps, work)
    else:
        raise SystemExit(f"unknown side {side}")


if __name__ == "__main__":
    main()
