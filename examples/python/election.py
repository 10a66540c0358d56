"""Leader election: two candidates, one leader at a time; an observer sees every change.

``node-a`` campaigns and wins, ``node-b`` campaigns and waits. The leader publishes a
new value (proclaim), then resigns: ``node-b`` takes over at once (no TTL wait). An
observer (which needs no session, as any client could run it) prints each leader.
Leadership also ends if the candidate's session is lost; ``leadership.lost()`` says so.

    python election.py
"""

from __future__ import annotations

import asyncio

import etcd_recipes
from _common import connect

ELECTION = "demo-leader"


async def main() -> None:
    async with connect() as client:
        election = client.election(ELECTION, ttl=5)
        saw_b = asyncio.Event()
        saw_none_after_b = asyncio.Event()

        async def observe() -> None:
            async for leader in client.observe_leader(ELECTION):
                if leader is None:
                    print("observer: no leader", flush=True)
                    if saw_b.is_set():
                        saw_none_after_b.set()
                else:
                    print(f"observer: leader is {leader.value_string} (fencing token {leader.fencing_token})", flush=True)
                    if leader.value == b"node-b":
                        saw_b.set()

        observer = asyncio.ensure_future(observe())

        a = await election.campaign("node-a")
        print(f"node-a is the leader (fencing token {a.fencing_token})", flush=True)

        async def candidate_b() -> None:
            async with election.campaign("node-b") as b:  # resigns when the block exits
                print(f"node-b is the leader (fencing token {b.fencing_token})", flush=True)
                await saw_b.wait()
            print("node-b resigned", flush=True)

        b_task = asyncio.ensure_future(candidate_b())
        await asyncio.sleep(0.2)
        print(f"node-b waiting: {not b_task.done()}", flush=True)

        await a.proclaim("node-a:ready")  # same leader, new value
        current = await election.leader()
        print(f"current value: {current.value.decode() if current else None}", flush=True)
        await a.resign()
        print("node-a resigned", flush=True)
        try:
            await a.proclaim("too late")
        except etcd_recipes.NotLeaderError as e:
            print(f"node-a can no longer proclaim: {e.code}", flush=True)

        await asyncio.wait_for(b_task, 10)
        await asyncio.wait_for(saw_none_after_b.wait(), 10)
        observer.cancel()
        try:
            await observer
        except asyncio.CancelledError:
            pass
        print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
