"""The README's Python quick start, verbatim (its test runs it)."""

import asyncio
import logging
import os

import etcd_recipes

logging.basicConfig(level=logging.INFO)  # core events arrive on the "etcd_recipes" logger
logging.getLogger("etcd_recipes").setLevel(logging.WARNING)


async def main() -> None:
    endpoints = os.environ.get("ETCD_ENDPOINTS", "127.0.0.1:2379").split(",")
    async with await etcd_recipes.Client.connect(endpoints, namespace="quickstart/") as client:
        # Distributed lock: waits up to 5 s; guarded writes fail once the lock is lost.
        async with client.lock("jobs/report", ttl=10, timeout=5) as guard:
            await guard.put("reports/last-run", "now")
            print("lock held, fencing token", guard.fencing_token)

        # Leader election: resigns when the block exits.
        election = client.election("scheduler", ttl=10)
        async with election.campaign("node-1") as leadership:
            leader = await election.leader()
            print("leader:", leader.value if leader else None, leadership.is_leader)

        # Service registry (deregisters when the block exits) and discovery: a local,
        # watched view of the instances (`async for instances in view` yields each change).
        async with client.register("api", "api-1", "10.0.0.1:8080", metadata={"zone": "a"}):
            async with await client.discover("api") as view:
                print("instances:", [(i.id, i.addr, i.metadata) for i in view.instances()])
                print("pick:", view.pick_round_robin())

        # Config: a watched local copy; reads are plain synchronous calls.
        await client.put("app/feature-x", "on")
        await client.put("app/limits", '{"rps": 100}')
        async with await client.config("app/", prefix=True) as config:
            print("feature-x:", config.get_string("app/feature-x"), "limits:", config.get_json("app/limits"))

        # Errors: one base class, a subclass per kind, with a stable `code`.
        async with client.lock("jobs/report"):
            try:
                await client.lock("jobs/report").try_acquire()
            except etcd_recipes.LockTimeoutError as e:
                print("busy:", e.code)
            except etcd_recipes.EtcdRecipesError as e:
                print("other failure:", e.code, e)


asyncio.run(main())
