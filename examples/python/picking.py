"""Client-side load balancing over discovered instances.

Three instances of ``pay`` register on one session (the process's lease: they live and
die with it), with a zone and a weight in their metadata. Views pick round robin,
weighted, zone-first and sticky; errors noted against an instance take it out for a
while; a draining instance is not picked; closing the session removes all three.

    python picking.py
"""

from __future__ import annotations

import asyncio
from collections import Counter

import etcd_recipes
from _common import connect

SERVICE = "pay"


def picks(view: etcd_recipes.ServiceView, n: int) -> list[str]:
    out = []
    for _ in range(n):
        inst = view.pick()
        out.append(inst.id if inst is not None else "-")
    return out


async def until(cond: object, what: str) -> None:
    """Poll `cond()` until true (watches deliver asynchronously); fail after 20 s."""
    assert callable(cond)
    for _ in range(1000):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(what)


async def main() -> None:
    async with connect() as client:
        session = await client.session(ttl=10)
        regs = [
            await session.register(SERVICE, f"pay-{n}", f"10.0.1.{n}:9000", metadata={"zone": zone, "weight": weight})
            for n, zone, weight in [(1, "a", 1), (2, "a", 3), (3, "b", 1)]
        ]
        print(f"registered {len(regs)} instances on lease {session.lease_id:x}", flush=True)

        rr = await client.discover(SERVICE)
        await until(lambda: len(rr) == 3, "three instances")
        print("round robin:", ", ".join(picks(rr, 6)), flush=True)

        weighted = await client.discover(SERVICE, picker="weighted")
        counts = Counter(picks(weighted, 5000))
        print(f"weighted: pay-2 (weight 3) got the most picks: {counts.most_common(1)[0][0] == 'pay-2'}", flush=True)

        local = await client.discover(SERVICE, prefer_zone="b")
        print("zone b first:", sorted(set(picks(local, 4))), flush=True)

        sticky = await client.discover(SERVICE, picker="sticky")
        print("sticky:", sorted(set(picks(sticky, 5))), flush=True)

        flaky = await client.discover(SERVICE, down_threshold=2, down_period=1.0)
        flaky.note_error("pay-1")
        flaky.note_error("pay-1")
        print(f"pay-1 after 2 errors: down={flaky.is_down('pay-1')}, picks {sorted(set(picks(flaky, 6)))}", flush=True)
        await until(lambda: not flaky.is_down("pay-1"), "pay-1 back")
        print("pay-1 is back after its down period", flush=True)

        zone_a = rr.pick(lambda i: bool(i.metadata["zone"] == "a"))
        print("a pick filtered to zone a:", zone_a.id if zone_a else None, flush=True)

        await regs[1].set_readiness("draining")
        await until(lambda: len(rr.available()) == 2, "pay-2 out of the picks")
        print(f"pay-2 draining: listed {len(rr)}, available {[i.id for i in rr.available()]}", flush=True)

        await session.close()  # every registration on it goes with it
        await until(lambda: len(rr) == 0, "all gone")
        print(f"session closed: {SERVICE} has {len(rr)} instances; pay-1 is {regs[0].state}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
