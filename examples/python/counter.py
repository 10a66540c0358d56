"""Atomic counter: four tasks count visits at once, none is lost; compare-and-set resets it."""

from __future__ import annotations

import asyncio

from _common import connect


async def main() -> None:
    async with connect() as client:
        visits = client.counter("demo/visits")
        await visits.set(0)

        async def visitor() -> None:
            for _ in range(25):
                await visits.add(1)  # a compare-and-swap, retried on conflict

        await asyncio.gather(*(visitor() for _ in range(4)))
        print("visits:", await visits.get())
        print("reset from 100:", await visits.compare_and_set(100, 0))
        print("reset from 100 again:", await visits.compare_and_set(100, 0))
        print("after 5 more:", await visits.add(5))


if __name__ == "__main__":
    asyncio.run(main())
