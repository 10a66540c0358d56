"""Barriers: a gate holds three workers until a coordinator opens it; a double barrier
makes three parties start together and finish together."""

from __future__ import annotations

import asyncio
import time

import etcd_recipes
from _common import connect


async def main() -> None:
    async with connect() as client:
        # Barrier: one key. While it exists, wait() blocks; deleting it lets everyone go.
        gate = client.barrier("demo/deploy-gate")
        print("gate held:", await gate.hold())
        passed: list[str] = []

        async def worker(name: str) -> None:
            print(f"{name} waits at the gate")
            await gate.wait(timeout=30)
            passed.append(name)
            print(f"{name} passes the gate")

        workers = [asyncio.create_task(worker(f"worker-{i}")) for i in range(1, 4)]
        await asyncio.sleep(0.2)  # let them reach the gate (a window, not an assertion)
        try:
            await gate.wait(timeout=0.2)
        except etcd_recipes.LockTimeoutError as e:
            print("a wait with a short timeout gives up:", e.code)
        print(f"still waiting at the gate: {3 - len(passed)}")
        print("coordinator releases the gate")
        await gate.release()
        await asyncio.gather(*workers)
        await gate.wait(timeout=1)  # returns at once: nothing holds the gate
        print("gate held now:", await gate.is_held())

        # Double barrier for 3 parties: enter() returns once all 3 are in, leave() once
        # all 3 are out. Each party's key lives on its own lease (10 s): a party that dies
        # frees its place instead of blocking the others forever.
        entered: dict[str, float] = {}
        parties = [client.double_barrier("demo/batch", 3, ttl=10, timeout=30) for _ in range(3)]

        async def enter(name: str, party: etcd_recipes.DoubleBarrier, delay: float) -> None:
            await asyncio.sleep(delay)  # parties arrive at different times
            print(f"{name} arrives")
            await party.enter()
            entered[name] = time.monotonic()

        await asyncio.gather(*(enter(f"party-{i + 1}", p, 0.15 * i) for i, p in enumerate(parties)))
        spread = (max(entered.values()) - min(entered.values())) * 1000
        print(f"all 3 entered; they started within {spread:.0f} ms of each other (arrivals were 300 ms apart)")

        try:
            await client.double_barrier("demo/batch", 3, ttl=10).enter(timeout=5)
        except etcd_recipes.LockTimeoutError as e:
            print("a fourth party is turned away, the barrier is full:", e.code)

        async def work_and_leave(name: str, party: etcd_recipes.DoubleBarrier, seconds: float) -> None:
            await asyncio.sleep(seconds)
            print(f"{name} finished its work after {seconds:.1f} s and waits for the others to leave")
            await party.leave()
            print(f"{name} left")

        await asyncio.gather(*(work_and_leave(f"party-{i + 1}", p, 0.1 + 0.2 * i) for i, p in enumerate(parties)))
        print("all 3 left together: done")


if __name__ == "__main__":
    asyncio.run(main())
