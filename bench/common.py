"""Shared by the Python sides of the bench: arguments, the card's sizes, JSON lines."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from typing import Any, Awaitable, Callable

KV_OPS = 20_000  # K1, K2
IN_FLIGHT = 64
SEQ_PUTS = 2_000  # K3
L1_CYCLES = 500
L2_WORKERS, L2_CYCLES = 8, 100
E1_TURNS = 30
EVENTS = 200  # D1, C1
D2_INSTANCES = 2_000
C2_READS = 1_000_000
E2_TTL, E2_KILLS = 2, 3  # E2: candidates' TTL (s); kills per run, the figure is their median
S1_PERMITS, S1_WORKERS, S1_CYCLES = 3, 12, 50
R1_READERS, R1_WRITERS, R1_CYCLES = 8, 2, 100
R1_WRITER = 1000  # R1's occupancy counter: +1 per reader inside, +1000 per writer
Q1_ITEMS = 5_000  # 2 producers, 2 consumers
W1_ITEMS, W1_CONSUMERS, W1_KILL_AFTER = 2_000, 4, 100  # the first consumer is killed after 100 acks
F1_TTL = 3  # F1's lock session
VALUE = b"x" * 256


def args() -> tuple[list[str], list[str]]:
    """`--endpoints a,b WORKLOAD...` -> (endpoints, workloads)."""
    argv, eps, work = sys.argv[1:], [], []
    while argv:
        a = argv.pop(0)
        if a == "--endpoints":
            eps = argv.pop(0).split(",")
        elif a.startswith("--endpoints="):
            eps = a.split("=", 1)[1].split(",")
        else:
            work.append(a.upper())
    return eps, work


def emit(side: str, workload: str, value: float | None, unit: str, ok: bool | None, **extra: Any) -> None:
    line = {"side": side, "lang": "python", "workload": workload, "value": value, "unit": unit, "ok": ok, **extra}
    print(json.dumps(line), flush=True)


def na(side: str, workload: str, why: str) -> None:
    emit(side, workload, None, "", None, na=why)


def median(v: list[float]) -> float:
    return statistics.median(v)


def p99(v: list[float]) -> float | None:
    if not v:
        return None
    v = sorted(v)
    return v[round((len(v) - 1) * 0.99)]


class Phases:
    """F1's samples: (start, ms, failed) of every op; `ready` on stdout, then the driver
    writes `fault` (a member is SIGSTOPped) and `end` (resumed: stop) on stdin."""

    def __init__(self) -> None:
        self.fault: float | None = None
        self.stopped = False

    async def wait_for_end(self) -> None:
        loop = asyncio.get_running_loop()
        print("ready", flush=True)
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if line == "fault":
                self.fault = time.perf_counter()
            elif line == "end" or line == "":
                break
        self.stopped = True

    async def loop(self, op: Callable[[int], Awaitable[object]]) -> list[tuple[float, float, bool]]:
        out, i = [], 0
        while not self.stopped:
            t0 = time.perf_counter()
            try:
                await op(i)
                failed = False
            except Exception:
                failed = True
            out.append((t0, (time.perf_counter() - t0) * 1e3, failed))
            if failed:
                await asyncio.sleep(0.005)  # a failure at once must not spin
            i += 1
        return out

    def phase(self, samples: list[tuple[float, float, bool]], a: float, b: float) -> tuple[float | None, int, int]:
        assert self.fault is not None, "no `fault` line on stdin"
        # In the phase: started in it, or (the first) still running when the fault began.
        got = [(ms, failed) for t0, ms, failed in samples
               if t0 - self.fault < b and (t0 - self.fault >= a or (a == 0 and t0 - self.fault + ms / 1e3 >= 0))]
        p = p99([ms for ms, _ in got])
        return (round(p, 2) if p is not None else None), len(got), sum(1 for _, f in got if f)

    def line(self, puts: list, locks: list, lost: int | None) -> dict:
        """`lost`: sessions lost (None: the client has no session to lose, e.g. a lease per lock)."""
        (ps, pn1, pe1), (pa, pn2, pe2) = self.phase(puts, 0, 2), self.phase(puts, 2, 10)
        (ls, ln1, le1), (la, ln2, le2) = self.phase(locks, 0, 2), self.phase(locks, 2, 10)
        return dict(value=ps, after_p99_ms=pa, lock_p99_ms=ls, lock_after_p99_ms=la, ops=pn1 + pn2,
                    lock_cycles=ln1 + ln2, errors=pe1 + pe2 + le1 + le2, sessions_lost=lost,
                    ok=lost in (0, None) and pn1 + pn2 > 0 and ln1 + ln2 > 0 and ps is not None)


async def in_flight(n: int, op: Callable[[int], Awaitable[bool]], width: int = IN_FLIGHT) -> tuple[float, bool]:
    """op(i) for i in range(n), `width` at a time; (ops/s, every op returned True)."""
    loop = asyncio.get_running_loop()
    it = iter(range(n))
    bad = 0

    async def worker() -> None:
        nonlocal bad
        for i in it:
            if not await op(i):
                bad += 1

    t = loop.time()
    await asyncio.gather(*(worker() for _ in range(width)))
    return n / (loop.time() - t), bad == 0
