"""Where the time of one Python K3 put goes: the asyncio face against the same etcd, split
into the synchronous part of the call (argument conversion, handing the request to the
tokio runtime), the wait for the result, and what waking an asyncio loop from another
thread costs on its own (core's result comes back from a tokio thread that way).

    python bench/crossing.py --endpoints a,b     one JSON line (medians, microseconds)

Compare `put_us` with the Rust K3 rows of the same run: the difference is the crossing.
"""

from __future__ import annotations

import asyncio
import json
import statistics
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


async def main() -> None:
    eps, _ = args()
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
    wake = await loop_wakeup_us()
    await c.close()
    med = statistics.median
    print(json.dumps({"side": "ours", "lang": "python", "workload": "K3-crossing", "put_us": round(med(total), 1),
                      "put_call_us": round(med(call), 1), "put_wait_us": round(med(wait), 1), "get_us": round(med(gets), 1),
                      "loop_wakeup_from_thread_us": round(wake, 1)}))


if __name__ == "__main__":
    asyncio.run(main())
