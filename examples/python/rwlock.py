"""Read-write lock: readers share a catalog, a writer updates it alone.

Same keys as etcd's Go ``recipe.RWMutex``: Go readers and writers share the lock."""

from __future__ import annotations

import asyncio

import etcd_recipes
from _common import connect


async def main() -> None:
    async with connect() as client:
        # Keep data keys outside the lock's prefix ("demo/catalog/"): a key there would
        # count as a holder.
        await client.put("demo/catalog-version", "1")
        rw = client.rwlock("demo/catalog", ttl=10, timeout=30)
        r1, r2 = await rw.read(), await rw.read()
        print("two readers hold the lock together")
        try:
            await rw.try_write()
        except etcd_recipes.LockTimeoutError as e:
            print("a writer has to wait:", e.code)
        writing = asyncio.ensure_future(rw.write())
        await r1.release()
        await r2.release()
        async with await writing as w:
            await w.put("demo/catalog-version", "2")  # only while we hold the lock
            print(f"the writer updated the catalog (fencing token {w.fencing_token})")
        async with await rw.read():
            print("a reader sees version", await client.get_string("demo/catalog-version"))


if __name__ == "__main__":
    asyncio.run(main())
