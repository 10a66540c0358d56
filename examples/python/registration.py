"""Service registration with graceful deregistration on shutdown.

Registers this process as an instance of the service ``demo-api`` (key
``demo-api/<id>`` bound to a lease, kept alive, re-registered by itself if the lease
is ever lost), then serves until SIGTERM or SIGINT (Ctrl-C), or for ``--serve-for``
seconds. On shutdown it deregisters at once (key deleted, lease revoked), so
discovery clients drop it now instead of one TTL later.

    python registration.py                   # serve 2 s, then shut down
    python registration.py --serve-for 0     # serve until Ctrl-C / SIGTERM
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

from _common import connect

SERVICE = "demo-api"


async def main(instance_id: str, addr: str, serve_for: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        stop.set()  # first: printing fails if stdout is gone
        print(f"received {sig.name}: shutting down", flush=True)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    async with connect() as client:
        metadata = {"pid": os.getpid(), "version": "1.4.2", "zone": "eu-1a"}
        # Leaving the `async with` (normally, by exception or after a signal) deregisters.
        async with client.register(SERVICE, instance_id, addr, metadata=metadata, ttl=10) as registration:
            print(f"registered {registration.key} -> {addr} (lease {registration.lease_id:x})", flush=True)
            try:
                await asyncio.wait_for(stop.wait(), serve_for if serve_for > 0 else None)
            except asyncio.TimeoutError:
                print(f"served for {serve_for:g} s: shutting down", flush=True)
            print(f"state before deregistering: {registration.state}", flush=True)
        print(f"deregistered {instance_id} (state: {registration.state})", flush=True)
        left = [i.id for i in await client.list_instances(SERVICE)]
        print(f"{SERVICE} instances now: {left}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--id", default=f"api-{os.getpid()}", help="instance id (default: api-<pid>)")
    parser.add_argument("--addr", default="127.0.0.1:8080", help="address clients should use")
    parser.add_argument("--serve-for", type=float, default=2.0, help="seconds to serve; 0 = until signalled")
    args = parser.parse_args()
    asyncio.run(main(args.id, args.addr, args.serve_for))
