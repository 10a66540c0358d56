"""Leader loop and leader latch: work that runs only while leader, and stops the moment
leadership is lost.

Three schedulers run a leader loop on one election. The leader's work writes ticks
through its fence (only while leader) and hands over after three ticks by returning; the
loop resigns at once and campaigns again, so every scheduler gets a term. Then the
current leader's lease is revoked (as if its session were lost): its work task is
cancelled at once and another scheduler takes over. A leader latch shows the simpler
"am I the leader?" form.

    python leader.py
"""

from __future__ import annotations

import asyncio

import etcd_recipes
from _common import connect

ELECTION = "demo-scheduler"


async def main() -> None:
    async with connect() as client:
        terms: list[str] = []
        revoked = asyncio.Event()

        def scheduler(name: str) -> etcd_recipes.LeaderLoop:
            lp = client.leader_loop(ELECTION, name, ttl=5)

            def stopped(e: etcd_recipes.LeaderEvent) -> None:
                print(f"{name} stopped leading: {e.reason}{f' ({e.detail})' if e.reason == 'lost' else ''}", flush=True)

            lp.on_stopped_leading(stopped)

            async def work(leadership: etcd_recipes.Leadership, cancelled: asyncio.Event) -> None:
                terms.append(name)
                print(f"{name} leads (fencing token {leadership.fencing_token})", flush=True)
                if len(terms) > 3:
                    # The last term: wait until someone revokes our lease.
                    revoked.set()
                    try:
                        await asyncio.sleep(3600)
                    except asyncio.CancelledError:
                        print(f"{name}: work cancelled, event set: {cancelled.is_set()}", flush=True)
                        raise
                for tick in range(3):
                    await leadership.put("demo-scheduler-tick", f"{name}:{tick}")  # fenced
                    await asyncio.sleep(0.05)

            lp.start(work)
            return lp

        loops = [scheduler(f"scheduler-{i}") for i in range(3)]
        await revoked.wait()
        leader = await client.leader(ELECTION)
        assert leader is not None
        await client.revoke_lease(leader.lease_id)
        while len(terms) < 5:
            await asyncio.sleep(0.05)
        print(f"terms so far: {len(terms)}; {len(set(terms))} schedulers led", flush=True)
        for lp in loops:
            await lp.close()

        # Leader latch: hold leadership until closed.
        async with client.leader_latch("demo-latch", "latch-1", ttl=5) as latch:
            leadership = await latch.await_leader(timeout=10)
            print(f"latch is leader: {latch.is_leader} (fencing token {leadership.fencing_token})", flush=True)
        print(f"latch closed; leader now: {await client.leader('demo-latch')}", flush=True)
        print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
