"""The config view's Python mirror: every read is served from one dict that core's applied
batches are written into, a batch at a time under the GIL. So a two-key transaction is never
seen half applied (from any thread), the mirror is etcd's state at the revision it reports,
a change handed to Python is already readable, and close() freezes the mirror."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest

import etcd_recipes
from etcd_recipes import Client, sync
from etcd_recipes.testing import EtcdCluster, etcdctl

from waiting import EVENTUALLY, wait_until, wait_until_sync

T = TypeVar("T")


class TornReads:
    """Reads a view from another thread while two keys are written together (`a` = `b` in
    every transaction, the values counting up): records every read that shows them apart."""

    def __init__(self, view: etcd_recipes.ConfigView | sync.ConfigView, a: str, b: str) -> None:
        self.view, self.a, self.b = view, a, b
        self.torn: list[str] = []
        self.seen: set[int] = set()
        self.reads = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        view, a, b = self.view, self.a, self.b
        last_rev = 0
        while not self.stop.is_set():
            self.reads += 1
            snap = view.snapshot()
            if snap.get(a) != snap.get(b):
                self.torn.append(f"snapshot at {snap.revision}: {a}={snap.get(a)!r} {b}={snap.get(b)!r}")
            # Read one key, then the other: the second read cannot be older than the first.
            x, y = view.get(a), view.get(b)
            if int(y or 0) < int(x or 0):
                self.torn.append(f"{a}={x!r} then {b}={y!r}")
            y, x = view.get(b), view.get(a)
            if int(x or 0) < int(y or 0):
                self.torn.append(f"{b}={y!r} then {a}={x!r}")
            rev = view.revision
            if rev < last_rev:
                self.torn.append(f"revision {last_rev} then {rev}")
            last_rev = rev
            if x is not None:
                self.seen.add(int(x))

    def finish(self, writes: int) -> None:
        # The reader really ran alongside the writes, to the end (else the test proves nothing).
        wait_until_sync(lambda: writes in self.seen, lambda: f"the reader saw {len(self.seen)} values, not {writes}")
        self.stop.set()
        self.thread.join(EVENTUALLY)
        assert not self.thread.is_alive()
        assert not self.torn, f"{len(self.torn)} torn reads in {self.reads}: {self.torn[:5]}"
        assert len(self.seen) > 5, f"the reader saw only {sorted(self.seen)}"


async def test_a_two_key_transaction_is_never_seen_half_applied_from_another_thread(client: Client) -> None:
    view = await client.config("tx/", prefix=True, reconcile_interval=0)
    reader = TornReads(view, "tx/a", "tx/b")
    n = 300
    async with await client.lock("tx-writer").acquire() as guard:
        for i in range(1, n + 1):
            await guard.txn([("put", "tx/a", str(i)), ("put", "tx/b", str(i))])
        rev = await guard.txn([("put", "tx/a", str(n)), ("put", "tx/b", str(n))])
    await wait_until(lambda: view.revision >= rev, f"view at revision {rev}")
    reader.finish(n)
    view.close()


def test_sync_face_two_key_transaction_is_never_seen_half_applied(sclient: sync.Client) -> None:
    with sclient.config("stx/", prefix=True) as view:
        reader = TornReads(view, "stx/a", "stx/b")
        n = 200
        with sclient.lock("stx-writer").acquire() as guard:
            for i in range(1, n + 1):
                rev = guard.txn([("put", "stx/a", str(i)), ("put", "stx/b", str(i))])
        wait_until_sync(lambda: view.revision >= rev, f"view at revision {rev}")
        reader.finish(n)


@pytest.fixture
def sclient(etcd: EtcdCluster, ns: str) -> Iterator[sync.Client]:
    with sync.Client.connect(etcd.endpoints, namespace=ns) as c:
        yield c


def etcd_at(cluster: EtcdCluster, prefix: str, revision: int) -> dict[str, bytes]:
    """etcd's own Get of `prefix` at `revision` (etcdctl, not our client)."""
    out = etcdctl(cluster, "get", "--prefix", prefix, f"--rev={revision}", "-w", "json").stdout
    kvs = json.loads(out).get("kvs", [])
    return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")) for kv in kvs}


async def retrying(op: Callable[[], Awaitable[T]]) -> T:
    """A write, again until etcd is back (the test restarts it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        try:
            return await asyncio.wait_for(op(), 5)
        except (etcd_recipes.EtcdRecipesError, asyncio.TimeoutError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_the_mirror_is_etcds_state_at_its_revision_after_writes_a_compaction_and_a_reread(
    etcd_factory: Callable[..., EtcdCluster],
) -> None:
    cluster = etcd_factory(1)
    c = await Client.connect(cluster.endpoints, request_timeout=5.0)
    rng = random.Random(16)
    keys = [f"m/k{i:02d}" for i in range(40)]
    for k in keys[:20]:
        await c.put(k, "init")
    view = await c.config("m/", prefix=True, reconcile_interval=None)

    async def writes(n: int, tag: str) -> None:
        async def one(i: int) -> None:
            k = rng.choice(keys)
            if rng.random() < 0.2:
                await retrying(lambda: c.delete(k))
            else:
                await retrying(lambda: c.put(k, f"{tag}{i}" * rng.randint(1, 4)))
        for start in range(0, n, 16):
            await asyncio.gather(*(one(i) for i in range(start, min(n, start + 16))))

    def check(snap: etcd_recipes.ConfigSnapshot) -> None:
        assert dict(snap) == etcd_at(cluster, "m/", snap.revision)
        assert view.keys() == sorted(snap) and len(view) == view.size == len(snap)
        for k in keys:
            assert view.get(k) == snap.get(k) and (k in view) == (k in snap)

    await writes(300, "a")
    await cluster.compact()
    await writes(100, "b")
    rev = await c.put("m/mark", "1")
    await wait_until(lambda: view.revision >= rev, f"view at revision {rev}")
    check(view.snapshot())
    # The watch breaks; the view reads the whole prefix again (a reset batch) and goes on.
    cluster.restart(0)
    await writes(200, "c")
    rev = await retrying(lambda: c.put("m/mark", "2"))
    await wait_until(lambda: view.revision >= rev, f"view at revision {rev} after the restart")
    snap = view.snapshot()
    assert snap["m/mark"] == b"2"
    check(snap)
    view.close()
    await c.close()


async def test_a_change_handed_out_is_already_readable(client: Client) -> None:
    view = await client.config("ryc/", prefix=True, reconcile_interval=0)
    other = await client.config("ryc/x")
    changes = view.changes()
    mine = other.changes()
    for i in range(100):
        v = f"v{i}".encode()
        rev = await client.put("ryc/x", v)
        change = await asyncio.wait_for(changes.__anext__(), EVENTUALLY)
        assert (change.key, change.new, change.revision) == ("ryc/x", v, rev)
        assert view.get("ryc/x") == v and view.revision >= rev and view.snapshot()["ryc/x"] == v
        change = await asyncio.wait_for(mine.__anext__(), EVENTUALLY)
        assert other.get() == v and other.get_string() == v.decode() and other.revision >= rev
    view.close()
    other.close()


async def test_close_freezes_the_mirror_and_reads_go_on(client: Client) -> None:
    await client.put("cl/a", "1")
    view = await client.config("cl/", prefix=True)
    get = view.get
    rev = view.revision
    view.close()
    rev2 = await client.put("cl/a", "2")
    await client.put("cl/b", "new")
    # A view made now has both writes: they reached etcd's watchers, but not the closed view.
    later = await client.config("cl/", prefix=True)
    assert later.revision > rev2 and later.get("cl/a") == b"2"
    later.close()
    assert view.get("cl/a") == get("cl/a") == b"1" and view.get_string("cl/a") == "1"
    assert "cl/b" not in view and view.keys() == ["cl/a"] and view.revision == rev
    assert dict(view.snapshot()) == {"cl/a": b"1"} and view.snapshot().revision == rev


async def test_get_is_a_c_function_with_the_methods_semantics(client: Client) -> None:
    await client.put("g/a", "1")
    key_view = await client.config("g/a")
    prefix_view = await client.config("g/", prefix=True)

    class Key(str):
        pass

    for view in (key_view, prefix_view):
        get = view.get
        assert type(get).__name__ == "builtin_function_or_method"
        assert get("g/a") == b"1" and get(Key("g/a")) == b"1" and get("g/zz") is None
        assert get("g/zz", b"d") == b"d" and get("g/a", b"d") == b"1"
        assert get(key="g/a") == b"1" and get("g/zz", default=7) == 7 and get(key="g/zz", default=None) is None
        # The class's method answers the same.
        assert type(view).get(view, "g/a") == b"1" and type(view).get(view, "g/zz", b"x") == b"x"
        with pytest.raises(TypeError):
            get(1)  # type: ignore[call-overload]
        with pytest.raises(TypeError):
            get("g/a", None, None)  # type: ignore[call-overload]
        with pytest.raises(TypeError):
            get("g/a", dflt=1)  # type: ignore[call-overload]
        with pytest.raises(TypeError):
            get("g/a", key="g/a")  # type: ignore[call-overload]
    assert key_view.get() == b"1" and key_view.get(None) == b"1" and key_view.get(default=b"x") == b"1"  # type: ignore[call-overload]
    for call in (lambda: prefix_view.get(), lambda: prefix_view.get(None), lambda: prefix_view.get(default=b"x")):  # type: ignore[call-overload]
        with pytest.raises(etcd_recipes.InvalidArgumentError):
            call()
    await client.delete("g/a")
    await wait_until(lambda: key_view.get() is None, "the delete")
    assert key_view.get(default=b"gone") == b"gone" and key_view.get(None, 3) == 3  # type: ignore[call-overload]
    key_view.close()
    prefix_view.close()
