"""Reliable work queue: two workers make thumbnails; a poison item fails on every attempt
and is moved to the dead letters, then requeued; a delayed item waits for its time."""

from __future__ import annotations

import asyncio

import etcd_recipes
from _common import connect


async def main() -> None:
    async with connect() as client:
        # Each delivery is claimed under a lease of its own (10 s): a worker that dies
        # mid-item gives it back when its lease expires. Two failed deliveries: dead letter.
        queue = client.work_queue("demo/thumbnails", ttl=10, max_deliveries=2)
        for name in ["a.png", "b.png", "poison.png"]:
            await queue.put(name)
        await queue.put("later.png", delay=0.5)

        async def worker(name: str) -> None:
            while True:
                try:
                    item = await queue.receive(timeout=1.5)
                except etcd_recipes.LockTimeoutError:
                    return  # nothing more to do
                if item.value_string == "poison.png":
                    print(f"{name} failed on {item.value_string} (attempt {item.deliveries})")
                    await item.nack()
                    continue
                print(f"{name} made a thumbnail of {item.value_string} (attempt {item.deliveries})")
                await item.ack()  # FencedError if our claim was lost meanwhile

        await asyncio.gather(worker("worker-1"), worker("worker-2"))
        dead = await queue.dead_letters()
        print("dead letters:", [(d.value_string, d.deliveries) for d in dead])
        print("requeued:", await queue.requeue_all_dead())
        item = await queue.receive(timeout=5)
        print(f"{item.value_string} is back (attempt {item.deliveries})")
        await item.ack()
        print("visible items left:", await queue.length())


if __name__ == "__main__":
    asyncio.run(main())
