"""Shared by the Python sides of the bench: arguments, the card's sizes, JSON lines."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
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
