"""Config manager: a watched local copy of app/ settings; reads are plain sync calls."""

from __future__ import annotations

import asyncio

from _common import connect


async def main() -> None:
    async with connect() as client:
        await client.put("app/feature", "off")
        async with await client.config("app/", prefix=True) as cfg:
            print("feature =", cfg.get_string("app/feature"))
            changes = cfg.changes()
            await client.put("app/feature", "on")
            change = await changes.__anext__()
            print(f"changed {change.key}: {change.old!r} -> {change.new!r} at revision {change.revision}")
            print("feature =", cfg.get_string("app/feature"))
            await changes.aclose()


if __name__ == "__main__":
    asyncio.run(main())
