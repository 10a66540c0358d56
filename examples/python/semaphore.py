"""Semaphore: six downloads share two permits, so at most two run at a time."""

from __future__ import annotations

import asyncio

import etcd_recipes
from _common import connect


async def main() -> None:
    async with connect() as client:
        sem = client.semaphore("demo/downloads", 2, ttl=10, timeout=30)
        state = {"inside": 0, "most": 0}

        async def download(name: str) -> None:
            async with sem as permit:
                state["inside"] += 1
                state["most"] = max(state["most"], state["inside"])
                # A guarded write: refused by etcd if the permit is no longer ours.
                await permit.put(f"demo/downloaded/{name}", str(permit.fencing_token))
                await asyncio.sleep(0.05)
                state["inside"] -= 1

        await asyncio.gather(*(download(f"file-{i}") for i in range(6)))
        print(f"6 downloads done, at most {state['most']} at a time")

        first, second = await sem.acquire(), await sem.acquire()
        try:
            await sem.try_acquire()
        except etcd_recipes.LockTimeoutError as e:
            print("both permits taken:", e.code)
        await first.release()
        await second.release()


if __name__ == "__main__":
    asyncio.run(main())
