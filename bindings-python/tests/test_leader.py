"""The leader loop and leader latch through the Python face, against a real etcd: one work
at a time (fenced counter), loss by lease revocation cancels the work's task at once,
requeue off, hand-over when the work returns, close / client close while leading, the
latch's await_leader / timeout / close, bad input."""

from __future__ import annotations

import asyncio
import time

import pytest

import etcd_recipes
from etcd_recipes import Client, Leadership, LeaderEvent
from etcd_recipes.testing import EtcdCluster

from waiting import EVENTUALLY, wait_until


async def test_one_work_at_a_time_with_a_fenced_counter(etcd: EtcdCluster, ns: str) -> None:
    state = {"running": 0, "most": 0, "writes": 0, "attempts": 0, "terms": 0}
    tokens: list[int] = []
    clients = [await Client.connect(etcd.endpoints, namespace=ns) for _ in range(3)]
    reader = clients[0]

    async def work(leadership: Leadership, cancelled: asyncio.Event) -> None:
        state["running"] += 1
        state["most"] = max(state["most"], state["running"])
        tokens.append(leadership.fencing_token)
        try:
            for _ in range(5):
                v = int(await reader.get_string("counter") or "0")
                await asyncio.sleep(0)
                state["attempts"] += 1
                await leadership.put("counter", str(v + 1))  # fenced: only while leader
                state["writes"] += 1
        finally:
            state["running"] -= 1
            state["terms"] += 1

    loops = [c.leader_loop("jobs", f"n{i}", ttl=5) for i, c in enumerate(clients)]
    try:
        for lp in loops:
            lp.start(work)
        await wait_until(lambda: state["terms"] >= 9, lambda: f"terms stalled: {state}", timeout=30)
    finally:
        for lp in loops:
            await lp.close()
    assert state["most"] == 1, f"two works at once: {state}"
    counter = int(await reader.get_string("counter") or "0")
    # Every acknowledged increment is there, none was lost to a concurrent work. A put
    # cancelled in flight (by close(), or by a term that ended early because a renewal was
    # late on a loaded machine) may or may not have been applied: counted as an attempt.
    assert state["writes"] <= counter <= state["attempts"], f"increments lost: counter {counter}, {state}"
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens), f"tokens not increasing: {tokens[-10:]}"
    assert await reader.leader("jobs") is None
    for c in clients:
        await c.close()


async def test_revoked_lease_cancels_the_task_and_another_takes_over(etcd: EtcdCluster, ns: str) -> None:
    ttl = 20
    started: asyncio.Queue[tuple[int, int, int]] = asyncio.Queue()
    ended: list[tuple[int, str, bool, float]] = []
    clients = [await Client.connect(etcd.endpoints, namespace=ns) for _ in range(3)]

    def make(i: int):  # type: ignore[no-untyped-def]
        async def work(leadership: Leadership, cancelled: asyncio.Event) -> None:
            await started.put((i, leadership.fencing_token, leadership.lease_id))
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                ended.append((i, "cancelled", cancelled.is_set(), time.monotonic()))
                raise
        return work

    loops = [c.leader_loop("svc", f"n{i}", ttl=ttl) for i, c in enumerate(clients)]
    stops: list[LeaderEvent] = []
    for i, lp in enumerate(loops):
        lp.on_stopped_leading(stops.append)
        lp.start(make(i))
    try:
        first, token, lease = await asyncio.wait_for(started.get(), EVENTUALLY)
        t0 = time.monotonic()
        await clients[1].revoke_lease(lease)
        nxt, token2, _ = await asyncio.wait_for(started.get(), EVENTUALLY)
        await wait_until(lambda: len(ended) >= 1, "the old work never ended")
        who, _, event_set, at = ended[0]
        assert who == first and event_set, f"ended {ended}"
        assert at - t0 < ttl / 4, f"cancel took {at - t0:.2f} s (TTL {ttl} s)"
        assert nxt != first and token2 > token
        await wait_until(lambda: any(e.reason == "lost" for e in stops), lambda: f"no lost event: {stops}")
        lost = next(e for e in stops if e.reason == "lost")
        assert lost.fencing_token == token and lost.kind == "stopped_leading" and lost.detail
        assert loops[nxt].is_leader and not loops[first].is_leader
    finally:
        for lp in loops:
            await lp.close()
        for c in clients:
            await c.close()


async def test_requeue_false_runs_one_term_and_reports_errors(client: Client) -> None:
    for fail in (False, True):
        lp = client.leader_loop("once", "me", ttl=10, requeue=False)
        events = lp.events()
        terms = []

        async def work(leadership: Leadership, cancelled: asyncio.Event) -> None:
            terms.append(leadership.fencing_token)
            await leadership.put("once-out", "done")
            if fail:
                raise RuntimeError("boom")

        await asyncio.wait_for(lp.run(work), EVENTUALLY)
        assert len(terms) == 1 and lp.is_closed
        kinds = [e async for e in events]
        started = [e for e in kinds if e.kind == "started_leading"]
        stopped = [e for e in kinds if e.kind == "stopped_leading"]
        assert len(started) == 1 and len(stopped) == 1, f"events {kinds}"
        assert stopped[0].reason == "returned" and stopped[0].fencing_token == terms[0]
        if fail:
            assert stopped[0].detail == "RuntimeError: boom", stopped[0].detail
        else:
            assert stopped[0].detail is None
        assert await client.leader("once") is None


async def test_work_returning_hands_over_at_once(etcd: EtcdCluster, ns: str) -> None:
    ca = await Client.connect(etcd.endpoints, namespace=ns)
    cb = await Client.connect(etcd.endpoints, namespace=ns)
    release = asyncio.Event()
    a_leads = asyncio.Event()
    b_leads: asyncio.Queue[float] = asyncio.Queue()

    async def a_work(leadership: Leadership, cancelled: asyncio.Event) -> None:
        a_leads.set()
        await release.wait()

    async def b_work(leadership: Leadership, cancelled: asyncio.Event) -> None:
        await b_leads.put(time.monotonic())
        await cancelled.wait()

    a = ca.leader_loop("hand", "a", ttl=30)
    b = cb.leader_loop("hand", "b", ttl=30)
    seen: list[object] = []
    b.on_new_leader(seen.append)
    try:
        a.start(a_work)
        await asyncio.wait_for(a_leads.wait(), EVENTUALLY)
        b.start(b_work)
        await wait_until(lambda: any(getattr(x, "value", None) == b"a" for x in seen), lambda: f"b never saw a: {seen}")
        t0 = time.monotonic()
        release.set()
        at = await asyncio.wait_for(b_leads.get(), EVENTUALLY)
        assert at - t0 < 5, f"hand-over took {at - t0:.2f} s (TTL 30 s)"
        leader = await ca.leader("hand")
        assert leader is not None and leader.value == b"b"
    finally:
        await a.close()
        await b.close()
        await ca.close()
        await cb.close()


async def test_close_while_leading_cancels_waits_and_resigns(client: Client) -> None:
    done: list[str] = []

    async def work(leadership: Leadership, cancelled: asyncio.Event) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)  # clean-up: close() waits for it
            done.append("cleaned up")
            raise

    lp = client.leader_loop("stop", "me", ttl=30)
    started = asyncio.Event()
    lp.on_started_leading(lambda e: started.set())
    lp.start(work)
    await asyncio.wait_for(started.wait(), EVENTUALLY)
    assert lp.is_leader and lp.leadership is not None
    await lp.close()
    assert done == ["cleaned up"]
    assert lp.is_closed and not lp.is_leader and lp.leadership is None
    assert await client.leader("stop") is None
    with pytest.raises(etcd_recipes.InvalidArgumentError):
        lp.start(work)

    # Cooperative work that watches the event, and cancelling run() closes the loop.
    lp = client.leader_loop("stop", "me", ttl=30)
    seen = asyncio.Event()

    async def cooperative(leadership: Leadership, cancelled: asyncio.Event) -> None:
        seen.set()
        await cancelled.wait()

    runner = asyncio.ensure_future(lp.run(cooperative))
    await asyncio.wait_for(seen.wait(), EVENTUALLY)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    await asyncio.wait_for(lp.wait(), EVENTUALLY)
    assert await client.leader("stop") is None


async def test_client_close_stops_the_loop(etcd: EtcdCluster, ns: str) -> None:
    c = await Client.connect(etcd.endpoints, namespace=ns)
    admin = await Client.connect(etcd.endpoints, namespace=ns)
    cancelled_seen: list[bool] = []

    async def work(leadership: Leadership, cancelled: asyncio.Event) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cancelled_seen.append(cancelled.is_set())

    lp = c.leader_loop("cc", "me", ttl=30)
    started = asyncio.Event()
    lp.on_started_leading(lambda e: started.set())
    lp.start(work)
    await asyncio.wait_for(started.wait(), EVENTUALLY)
    await c.close()
    with pytest.raises(etcd_recipes.ClosedError):
        await asyncio.wait_for(lp.wait(), EVENTUALLY)
    assert cancelled_seen == [True]
    assert await admin.leader("cc") is None
    await admin.close()


async def test_latch(etcd: EtcdCluster, ns: str) -> None:
    ca = await Client.connect(etcd.endpoints, namespace=ns)
    cb = await Client.connect(etcd.endpoints, namespace=ns)
    a = ca.leader_latch("latch", "a", ttl=30)
    b = cb.leader_latch("latch", "b", ttl=30)
    b_events = b.events()
    async with a:
        la = await a.await_leader(timeout=EVENTUALLY)
        assert a.is_leader and la.value == b"a"
        b.start()
        with pytest.raises(etcd_recipes.LockTimeoutError):
            await b.await_leader(timeout=0.3)
        assert not b.is_leader
    # Leaving `async with` closed a: b takes over.
    assert a.is_closed and not a.is_leader
    lb = await b.await_leader(timeout=EVENTUALLY)
    assert lb.fencing_token > la.fencing_token
    with pytest.raises(etcd_recipes.ClosedError):
        await a.await_leader()
    # Loss: revoke b's lease; lost() gives the reason; b campaigns again.
    lost = asyncio.ensure_future(b.lost())
    await asyncio.sleep(0)
    await ca.revoke_lease(lb.lease_id)
    reason = await asyncio.wait_for(lost, EVENTUALLY)
    assert reason, "lost() gave None"
    lb2 = await b.await_leader(timeout=EVENTUALLY)
    assert lb2.fencing_token > lb.fencing_token and lb2.lease_id != lb.lease_id
    await b.close()
    kinds = [(e.kind, e.reason) async for e in b_events if e.kind != "new_leader"]
    assert kinds == [
        ("started_leading", None),
        ("stopped_leading", "lost"),
        ("started_leading", None),
        ("stopped_leading", "cancelled"),
    ], kinds
    assert await ca.leader("latch") is None
    await ca.close()
    await cb.close()


async def test_bad_input(client: Client) -> None:
    with pytest.raises(etcd_recipes.InvalidArgumentError):
        client.leader_loop("", "x")
    with pytest.raises(etcd_recipes.InvalidArgumentError):
        client.leader_loop("x", "v", ttl=0)
    with pytest.raises(etcd_recipes.InvalidArgumentError):
        client.leader_loop("x", "v", stop_timeout=-1)
    with pytest.raises(etcd_recipes.InvalidArgumentError):
        client.leader_latch("a/", "v")
    with pytest.raises(TypeError):
        client.leader_loop("x", "v").start(42)  # type: ignore[arg-type]
    latch = client.leader_latch("x", "v")
    with pytest.raises(etcd_recipes.LockTimeoutError):
        await latch.await_leader(timeout=0.05)  # not started: never leader
    await latch.close()
