"""Nemesis worker (Python face): fenced increments of one counter under one lock.

Usage: python worker.py ENDPOINTS NAME SECONDS [lock|elect]
Each increment (lock): acquire "nemesis/lock" (session TTL 3 s), read "nemesis/counter"
("<n> <token>"), check our fencing token is above the stored one, write "<n+1> <token>"
with a guarded put, release. (elect): the same with leadership of "nemesis/election"
(campaign, guarded put of "nemesis/leader-counter", resign). One JSON line per attempt on stdout:
  {"w": name, "r": "ok"|"fenced"|"unknown"|"error", "n": n+1, "t": token, "ms": latency, "k": code}
SIGTERM ends the loop; the client is closed (leases revoked) before exit.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

import etcd_recipes


async def main(endpoints: list[str], name: str, seconds: float, mode: str) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    deadline = time.monotonic() + seconds
    out = sys.stdout
    async with await etcd_recipes.Client.connect(endpoints, connect_timeout=10) as client:
        lock = client.lock("nemesis/lock", ttl=3, timeout=10)
        election = client.election("nemesis/election", ttl=3)
        counter = "nemesis/counter" if mode == "lock" else "nemesis/leader-counter"
        while not stop.is_set() and time.monotonic() < deadline:
            t0 = time.monotonic()
            rec: dict[str, object] = {"w": name}
            try:
                async with (lock if mode == "lock" else await asyncio.wait_for(election.campaign(name), 10)) as guard:
                    raw = await client.get(counter)
                    n, token = (int(x) for x in (raw or b"0 0").split())
                    rec["t"] = guard.fencing_token
                    rec["n"] = n + 1
                    if guard.fencing_token <= token:
                        rec["violation"] = f"token {guard.fencing_token} not above stored {token}"
                    try:
                        await guard.put(counter, f"{n + 1} {guard.fencing_token}")
                        rec["r"] = "ok"
                    except etcd_recipes.FencedError:
                        rec["r"] = "fenced"
                    except etcd_recipes.UnknownOutcomeError:
                        rec["r"] = "unknown"
            except etcd_recipes.EtcdRecipesError as e:
                rec.setdefault("r", "error")
                rec["k"] = e.code
            except asyncio.TimeoutError:
                rec.setdefault("r", "error")
                rec["k"] = "CAMPAIGN_TIMEOUT"
            rec["ms"] = round((time.monotonic() - t0) * 1e3, 2)
            out.write(json.dumps(rec) + "\n")
            out.flush()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1].split(","), sys.argv[2], float(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else "lock"))
