"""Queues: a FIFO job queue shared by two consumers, a consumer woken by a new item, and a
priority queue (lower number first). Items are handed out at most once: for redelivery
after a crash, use the work queue (workqueue.py)."""

from __future__ import annotations

import asyncio

import etcd_recipes
from _common import connect


async def main() -> None:
    async with connect() as client:
        jobs = client.queue("demo/jobs")
        for i in range(1, 7):
            await jobs.enqueue(f"job-{i}")
        print("enqueued 6 jobs; length:", await jobs.length())

        got: dict[str, list[str]] = {}

        async def consumer(name: str) -> None:
            got[name] = []
            while (item := await jobs.try_dequeue()) is not None:  # None: the queue is empty
                got[name].append(item.value_string)
                print(f"{name} took {item.value_string}")
                await asyncio.sleep(0.01)

        await asyncio.gather(consumer("consumer-1"), consumer("consumer-2"))
        everything = sorted(got["consumer-1"] + got["consumer-2"], key=lambda s: int(s.split("-")[1]))
        print(f"each job went to exactly one consumer: {len(everything)} taken, "
              f"{len(set(everything))} distinct, length now {await jobs.length()}")

        # A consumer of an empty queue waits (up to its timeout) and wakes on the next item.
        waiting = asyncio.ensure_future(jobs.dequeue(timeout=10))
        await asyncio.sleep(0.2)  # let it start waiting (a window, not an assertion)
        await jobs.enqueue("job-7")
        print("a waiting consumer woke up with", (await waiting).value_string)
        try:
            await jobs.dequeue(timeout=0.2)
        except etcd_recipes.LockTimeoutError as e:
            print("dequeue on an empty queue gives up:", e.code)

        # Priority queue: lower number first, FIFO within one priority.
        tasks = client.priority_queue("demo/tasks")
        for value, priority in [("weekly digest", 100), ("page on-call", 0), ("rotate logs", 10),
                                ("patch openssl", 0), ("resize images", 10)]:
            await tasks.enqueue(value, priority)
            print(f"enqueued {value!r} with priority {priority}")
        order = [(await tasks.dequeue(timeout=5)).value_string for _ in range(5)]
        print("dequeued in order:", ", ".join(order))


if __name__ == "__main__":
    asyncio.run(main())
