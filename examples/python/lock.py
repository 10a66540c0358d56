"""Distributed lock: four workers increment a shared counter, one at a time."""

from __future__ import annotations

import asyncio

from _common import connect


async def main() -> None:
    async with connect() as client:
        await client.put("demo/counter", "0")

        async def worker(name: str) -> None:
            async with client.lock("demo/counter-lock", ttl=10, timeout=30) as guard:
                value = int((await client.get("demo/counter")) or b"0")
                # A guarded write: refused by etcd if we no longer hold the lock.
                await guard.put("demo/counter", str(value + 1))
                print(f"{name} holds the lock (fencing token {guard.fencing_token}), counter -> {value + 1}")

        await asyncio.gather(*(worker(f"worker-{i}") for i in range(4)))
        print("final counter:", (await client.get("demo/counter") or b"").decode())


if __name__ == "__main__":
    asyncio.run(main())
