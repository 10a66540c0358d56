"""The config view under faults: a frozen member that misses writes and a compaction
(its watch resumes from a compacted revision), and a member restart. Reconciliation is
off, so convergence must come from the watch and its recovery, and the revision the
view reports never goes backwards."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

import etcd_recipes
from etcd_recipes import Client
from etcd_recipes.testing import EtcdCluster

from waiting import summary, wait_until

T = TypeVar("T")


class RevisionLog:
    """Samples `view.revision` and every change's revision; both must never decrease."""

    def __init__(self, view: etcd_recipes.ConfigView) -> None:
        self.view = view
        self.sampled: list[int] = []
        self.changes: list[tuple[str, bytes | None, int]] = []
        self.stream = view.changes()
        self.tasks = [asyncio.ensure_future(self._sample()), asyncio.ensure_future(self._follow())]

    async def _sample(self) -> None:
        while True:
            self.sampled.append(self.view.revision)
            await asyncio.sleep(0.005)

    async def _follow(self) -> None:
        async for change in self.stream:
            self.changes.append((change.key, change.new, change.revision))

    async def seen(self, key: str, value: bytes) -> None:
        """Wait until the change stream has delivered `key` = `value`."""
        await wait_until(
            lambda: any(k == key and v == value for k, v, _ in self.changes),
            lambda: f"no change {key} = {value!r} in {summary(self.changes)}",
        )

    async def stop(self) -> None:
        await self.stream.aclose()
        self.tasks[0].cancel()
        results = await asyncio.gather(*self.tasks, return_exceptions=True)
        follow_error = results[1]
        assert not isinstance(follow_error, Exception), f"the change stream failed: {follow_error!r}"
        back = backwards(self.sampled)
        assert back is None, f"view revision went backwards: {back} ({len(self.sampled)} samples)"
        revs = [r for _, _, r in self.changes]
        back = backwards(revs)
        assert back is None, f"change revisions went backwards: {back} ({len(revs)} changes)"


def backwards(values: list[int]) -> str | None:
    """Where `values` first decreases (with a little context), or None."""
    for i in range(1, len(values)):
        if values[i] < values[i - 1]:
            return f"at {i}: {values[max(0, i - 5):i + 5]}"
    return None


async def retrying(op: Callable[[], Awaitable[T]], timeout: float = 30) -> T:
    """Run `op` until it succeeds: freezing the leader makes the rest elect a new one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await asyncio.wait_for(op(), 10)
        except (etcd_recipes.EtcdRecipesError, asyncio.TimeoutError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def is_leader(cluster: EtcdCluster, i: int) -> bool:
    p = await asyncio.create_subprocess_exec(
        *cluster.etcdctl[:1], f"--endpoints={cluster.endpoint(i)}", "endpoint", "status", "-w", "json",
        env=dict(os.environ, ETCDCTL_API="3"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await p.communicate()
    assert p.returncode == 0, err
    status = json.loads(out)[0]["Status"]
    return bool(status["header"]["member_id"] == status["leader"])


async def compact(cluster: EtcdCluster, via: int) -> None:
    """Compact at the current revision through member `via` (the harness's own
    compaction may pick the frozen member and hang)."""
    env = dict(os.environ, ETCDCTL_API="3")
    ep = f"--endpoints={cluster.endpoint(via)}"
    p = await asyncio.create_subprocess_exec(cluster.etcdctl[0], ep, "endpoint", "status", "-w", "json", env=env,
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await p.communicate()
    assert p.returncode == 0, err
    rev = json.loads(out)[0]["Status"]["header"]["revision"]
    p = await asyncio.create_subprocess_exec(cluster.etcdctl[0], ep, "compaction", "--physical", str(rev), env=env,
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await p.communicate()
    assert p.returncode == 0, err


async def converge(view: etcd_recipes.ConfigView, key: str, value: bytes, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while view.get(key) != value:
        assert loop.time() < deadline, f"{key} = {view.get(key)!r}, expected {value!r}"
        await asyncio.sleep(0.01)


async def test_config_converges_after_freeze_missed_writes_and_compaction(
    etcd_factory: Callable[..., EtcdCluster],
) -> None:
    cluster = etcd_factory(3)
    # The view talks to one follower only, so freezing that member freezes its watch.
    # (Not the leader: etcd 3.5.1 has been seen serving stale reads for 20+ s from a
    # member frozen and resumed while it led, which would test etcd, not the view.)
    followers = [i for i in range(3) if not await is_leader(cluster, i)]
    frozen = followers[0]
    writer = await Client.connect(cluster.endpoint((frozen + 1) % 3), request_timeout=10.0)
    reader = await Client.connect(cluster.endpoint(frozen), request_timeout=2.0)
    await writer.put("cfg/v", "0")
    await writer.put("cfg/gone", "x")
    view = await reader.config("cfg/", prefix=True, reconcile_interval=None)
    assert view.get("cfg/v") == b"0"
    log = RevisionLog(view)
    try:
        cluster.pause(frozen)
        try:
            for i in range(1, 21):
                await retrying(lambda: writer.put("cfg/v", str(i)))
            await retrying(lambda: writer.delete("cfg/gone"))
            await retrying(lambda: writer.put("cfg/new", "n"))
            final_rev = await retrying(writer.revision)
            # Everything the frozen member's watcher has not seen is compacted away.
            await compact(cluster, via=(frozen + 1) % 3)
        finally:
            cluster.resume(frozen)
        await converge(view, "cfg/v", b"20")
        await converge(view, "cfg/new", b"n")
        assert view.get("cfg/gone") is None and view.keys() == ["cfg/new", "cfg/v"]
        assert view.revision >= final_rev
        # Right after resuming: more writes, compacted at once, while the view recovers.
        for i in range(21, 31):
            await writer.put("cfg/v", str(i))
        await compact(cluster, via=(frozen + 1) % 3)
        await converge(view, "cfg/v", b"30")
        assert view.revision >= await writer.revision()
        # Subscribers are told too: the change to the final value reaches the stream.
        await log.seen("cfg/v", b"30")
        assert log.changes[-1][:2] == ("cfg/v", b"30"), summary(log.changes)
    finally:
        await log.stop()
        view.close()
        await reader.close()
        await writer.close()


async def test_config_converges_after_member_restart(etcd_factory: Callable[..., EtcdCluster]) -> None:
    cluster = etcd_factory(1)
    client = await Client.connect(cluster.endpoints, request_timeout=2.0)
    await client.put("cfg/v", "before")
    view = await client.config("cfg/v", reconcile_interval=None)
    log = RevisionLog(view)
    try:
        assert view.get_string() == "before"
        rev_before = view.revision
        cluster.restart(0)  # keeps its data; the watch reconnects
        # Local reads keep working while etcd is away, and afterwards.
        assert view.get_string() == "before"
        await client.put("cfg/v", "after")
        await converge(view, "cfg/v", b"after")
        assert view.revision > rev_before
        await log.seen("cfg/v", b"after")
        # The same after a member was stopped for a while: writes resume, the view follows.
        cluster.stop_member(0)
        await asyncio.sleep(0.5)
        assert view.get_string() == "after"
        cluster.start_member(0)
        for i in range(5):
            await client.put("cfg/v", f"again-{i}")
        await cluster.compact()
        await converge(view, "cfg/v", b"again-4")
        await log.seen("cfg/v", b"again-4")
    finally:
        await log.stop()
        view.close()
        await client.close()
