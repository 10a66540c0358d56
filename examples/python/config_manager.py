"""Config manager: a watched local copy of app/ settings; reads are plain sync calls.

Typed reads with a default (a value that does not decode is an error naming its key, never
the default), a subscription to one key, a snapshot with its revision, and the client's
connection state."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

from _common import connect


@dataclasses.dataclass(frozen=True)
class Limits:
    rps: int
    burst: int = 1

    @classmethod
    def parse(cls, value: Any) -> "Limits":
        return cls(**value)


async def main() -> None:
    async with connect() as client:
        print("connection:", client.connection_state)
        await client.put("app/feature", "off")
        await client.put("app/limits", json.dumps({"rps": 100}))
        async with await client.config("app/", prefix=True) as cfg:
            print("feature =", cfg.get_string("app/feature"))
            print("limits =", cfg.get_json("app/limits", decode=Limits.parse))
            print("timeout =", cfg.get_json("app/timeout", decode=float, default=2.5))
            feature = cfg.changes("app/feature")  # this key's changes only
            await client.put("app/limits", json.dumps({"rps": 200, "burst": 10}))
            await client.put("app/feature", "on")
            change = await feature.__anext__()
            print(f"changed {change.key}: {change.old!r} -> {change.new!r} at revision {change.revision}")
            print("feature =", cfg.get_string("app/feature"))
            snap = cfg.snapshot()
            print(f"snapshot at revision {snap.revision}: {sorted(snap)}")
            await feature.aclose()


if __name__ == "__main__":
    asyncio.run(main())
