"""Discovery: a live view of the service ``demo-api`` that prints every change.

The view keeps a local copy of the instance set (reads need no network) and a watch
keeps it current. By default this example also starts, updates and stops three
instances itself so there is something to watch, and exits once they are gone.
With ``--watch-for SECONDS`` it only watches: run ``registration.py`` in another
terminal against the same etcd (``ETCD_ENDPOINTS``) and see it come and go.

    python discovery.py
    ETCD_ENDPOINTS=127.0.0.1:2379 python discovery.py --watch-for 60
"""

from __future__ import annotations

import argparse
import asyncio
from contextlib import AsyncExitStack

import etcd_recipes
from _common import connect

SERVICE = "demo-api"


def show(view: etcd_recipes.ServiceView) -> str:
    return ", ".join(f"{i.id}@{i.addr}" for i in view.instances()) or "(none)"


async def simulate(client: etcd_recipes.Client, shown: asyncio.Event) -> None:
    """Three instances come up, one changes its metadata, then all go away (once the
    watcher has shown the full set: watchers run at their own pace)."""
    async with AsyncExitStack() as stack:
        regs = []
        for n in range(1, 4):
            reg = await stack.enter_async_context(
                client.register(SERVICE, f"api-{n}", f"10.0.0.{n}:8080", metadata={"zone": "a" if n < 3 else "b"})
            )
            regs.append(reg)
        await regs[0].update_metadata({"zone": "a", "draining": True})
        await shown.wait()
        for reg in regs:
            await reg.close()


async def main(watch_for: float) -> None:
    async with connect() as client:
        async with await client.discover(SERVICE) as view:
            print(f"{SERVICE}: {show(view)} at revision {view.revision}", flush=True)
            events = view.events()  # subscribe before anything changes
            shown = asyncio.Event()  # the demo's instances were all up, and shown
            demo = None if watch_for > 0 else asyncio.ensure_future(simulate(client, shown))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + (watch_for if watch_for > 0 else 30.0)
            gone = 0
            try:
                while True:
                    try:
                        event = await asyncio.wait_for(events.__anext__(), max(0.0, deadline - loop.time()))
                    except (asyncio.TimeoutError, StopAsyncIteration):
                        break
                    detail = f" {event.instance.addr} {event.instance.metadata}" if event.instance else ""
                    print(f"{event.kind:>7} {event.id}{detail} (revision {event.revision})", flush=True)
                    print(f"         now: {show(view)}", flush=True)
                    picked = view.pick_round_robin()
                    if picked is not None:
                        print(f"         next request goes to {picked.addr}", flush=True)
                    gone += event.kind == "down"
                    if event.kind == "updated":
                        shown.set()
                    if demo is not None and gone == 3:
                        break
            finally:
                await events.aclose()
                if demo is not None:
                    await demo
            print(f"done: {SERVICE} has {len(view)} instances", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--watch-for", type=float, default=0.0, help="only watch, for this many seconds")
    asyncio.run(main(parser.parse_args().watch_for))
