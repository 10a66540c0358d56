"""Client, Session, errors, logging and interpreter exit, against a real etcd."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable

import pytest

import etcd_recipes
from etcd_recipes import Client
from etcd_recipes.testing import EtcdCluster

from waiting import EVENTUALLY, summary, tail, wait_until


async def test_kv_roundtrip_and_namespace(etcd: EtcdCluster, client: Client, ns: str) -> None:
    rev = await client.put("greeting", "hello")
    assert rev > 0
    assert await client.get("greeting") == b"hello"
    await client.put("raw", b"\x00\xff")
    assert await client.get("raw") == b"\x00\xff"
    assert await client.get("missing") is None
    # The namespace is a real prefix in etcd.
    async with await Client.connect(etcd.endpoints) as plain:
        assert await plain.get(ns + "greeting") == b"hello"
    assert await client.get_string("greeting") == "hello"
    assert await client.get_string("missing") is None
    with pytest.raises(etcd_recipes.DecodeError, match="raw"):
        await client.get_string("raw")
    assert await client.delete("greeting") == 1
    assert await client.delete("greeting") == 0
    assert await client.revision() >= rev


async def test_async_with_closes_client(etcd: EtcdCluster) -> None:
    async with await Client.connect(etcd.endpoints[0]) as c:
        assert not c.is_closed and c.endpoints == [etcd.endpoints[0]] and c.namespace == ""
    assert c.is_closed
    with pytest.raises(etcd_recipes.ClosedError) as ei:
        await c.get("k")
    assert ei.value.code == "CLOSED"
    await c.close()  # idempotent


async def leases_in_etcd(etcd: EtcdCluster) -> set[int]:
    """Every lease etcd has (`etcdctl lease list`: exact, unlike a time-to-live in whole seconds)."""
    p = await asyncio.create_subprocess_exec(
        *etcd.etcdctl, "lease", "list", env=dict(os.environ, ETCDCTL_API="3"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await p.communicate()
    assert p.returncode == 0, tail(err)
    return {int(line, 16) for line in out.decode().split()[3:]}  # after "found N leases"


async def test_session_stays_alive_then_close_revokes(etcd: EtcdCluster, client: Client) -> None:
    session = await client.session(ttl=2)
    assert session.ttl == 2 and session.is_alive and session.state == "alive"
    # Not lost for more than two TTLs: renewals must have happened (the window is what
    # is asserted on, not a guess how long something takes).
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(session.lost(), 4.5)
    assert session.is_alive
    # (`etcdctl lease list` is exact; a time-to-live is in whole seconds.)
    assert session.lease_id in await leases_in_etcd(etcd)
    await session.close()
    assert session.state in ("closed",) and not session.is_alive
    assert not await client.lease_exists(session.lease_id)
    assert session.lease_id not in await leases_in_etcd(etcd)
    await session.close()  # idempotent


async def test_session_context_manager_and_lost_on_revoke(client: Client) -> None:
    async with await client.session(ttl=5) as session:
        waiter = asyncio.ensure_future(session.lost())
        await asyncio.sleep(0.05)
        assert not waiter.done()
        await client.revoke_lease(session.lease_id)
        reason = await asyncio.wait_for(waiter, EVENTUALLY)
        assert reason is not None and ("revoked" in reason or "expired" in reason)
        assert session.state in ("lost",)
    # closing a lost session is fine


async def test_session_lost_before_expiry_when_member_frozen(etcd_factory: Callable[..., EtcdCluster]) -> None:
    cluster = etcd_factory(1)
    client = await Client.connect(cluster.endpoints, request_timeout=2.0)
    # The last confirmed renewal was sent before the pause, so the lease lives at most
    # one TTL after it in etcd: "lost" must come within one TTL of the pause. (A TTL of
    # 5 s: the session declares itself lost 0.5 s before its deadline, and a renewal was
    # sent up to TTL/3 before the pause; that is the slack left for a loaded machine.)
    session = await client.session(ttl=5)
    cluster.pause(0)
    try:
        t0 = time.monotonic()
        reason = await asyncio.wait_for(session.lost(), session.ttl + EVENTUALLY)
        elapsed = time.monotonic() - t0
        assert elapsed < session.ttl, f"lost ({reason}) {elapsed:.2f} s after the freeze, TTL {session.ttl} s"
    finally:
        cluster.resume(0)
    await client.close()


async def test_cancelled_await_does_not_break_the_session(client: Client) -> None:
    session = await client.session(ttl=3)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(session.lost(), 0.1)
    assert session.is_alive
    await session.close()
    # Closed by its owner: a normal end, not a loss.
    assert await asyncio.wait_for(session.lost(), EVENTUALLY) is None


# ------------------------------------------------------------------ bad input


async def test_bad_connect_arguments() -> None:
    with pytest.raises(etcd_recipes.InvalidArgumentError) as ei:
        await Client.connect([])
    assert isinstance(ei.value, ValueError) and ei.value.code == "INVALID_ARGUMENT"
    assert "empty" in str(ei.value)
    with pytest.raises(ValueError, match="malformed"):
        await Client.connect(["localhost"])
    with pytest.raises(ValueError, match="malformed"):
        await Client.connect("ftp://x:1")
    with pytest.raises(TypeError, match="endpoints"):
        await Client.connect(123)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="endpoints"):
        await Client.connect([b"127.0.0.1:2379"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="connect_timeout"):
        await Client.connect("127.0.0.1:2379", connect_timeout=0)
    with pytest.raises(ValueError, match="request_timeout"):
        await Client.connect("127.0.0.1:2379", request_timeout=float("nan"))
    with pytest.raises(TypeError):
        await Client.connect("127.0.0.1:2379", namespace=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="https"):
        await Client.connect("https://127.0.0.1:2379")
    with pytest.raises(FileNotFoundError):
        await Client.connect("https://127.0.0.1:2379", ca_cert="/nonexistent/ca.pem")


async def test_unreachable_endpoint_fails_within_connect_timeout() -> None:
    t0 = time.monotonic()
    with pytest.raises(etcd_recipes.ConnectError) as ei:
        await Client.connect("127.0.0.1:1", connect_timeout=1.0)
    # Gives up after the connect timeout (1 s), not the default 5 s; loose for a loaded machine.
    elapsed = time.monotonic() - t0
    assert elapsed < 4.0, f"connect gave up after {elapsed:.1f} s"
    assert isinstance(ei.value, ConnectionError) and ei.value.code == "CONNECT"
    assert "127.0.0.1:1" in str(ei.value)


async def test_bad_values_and_ttls(client: Client) -> None:
    with pytest.raises(TypeError, match="bytes or str"):
        await client.put("k", 12)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await client.put(b"k", "v")  # type: ignore[arg-type]
    with pytest.raises(etcd_recipes.InvalidArgumentError, match="empty"):
        await client.put("", "v")
    with pytest.raises(etcd_recipes.InvalidArgumentError, match="NUL"):
        await client.get("a\0b")
    with pytest.raises(TypeError):
        await client.session(ttl=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await client.session(10)  # type: ignore[call-arg]  # ttl is keyword-only


async def settle(x: object) -> object:
    return await x if inspect.isawaitable(x) else x


BAD_TTLS = [(0, "at least 1"), (-1, "at least 1"), (-(2**70), "at least 1"), (10**10, "maximum"),
            (2**63, "maximum"), (10**30, "maximum")]


@pytest.mark.parametrize(("ttl", "message"), BAD_TTLS, ids=[str(t) for t, _ in BAD_TTLS])
async def test_every_bad_ttl_is_an_invalid_argument(client: Client, ttl: int, message: str) -> None:
    """Whatever takes a TTL says InvalidArgumentError (never OverflowError), at the call."""
    makers: dict[str, Callable[[], object]] = {
        "session": lambda: client.session(ttl=ttl),
        "lock": lambda: client.lock("l", ttl=ttl),
        "election": lambda: client.election("e", ttl=ttl),
        "register": lambda: client.register("svc", "i-1", "10.0.0.1:80", ttl=ttl),
    }
    for what, make in makers.items():
        with pytest.raises(etcd_recipes.InvalidArgumentError, match=message) as ei:
            await settle(make())
            raise AssertionError(f"{what}: no error for ttl={ttl}")
        assert ei.value.code == "INVALID_ARGUMENT", what


BAD_TIMEOUTS = [-1.0, float("nan"), float("inf"), -float("inf")]


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS, ids=[str(t) for t in BAD_TIMEOUTS])
async def test_every_bad_timeout_is_an_invalid_argument(client: Client, timeout: float) -> None:
    session = await client.session(ttl=5)
    lock = client.lock("l")
    election = client.election("e")
    makers: dict[str, Callable[[], object]] = {
        "client.lock": lambda: client.lock("l", timeout=timeout),
        "client.election": lambda: client.election("e", timeout=timeout),
        "session.lock": lambda: session.lock("l", timeout=timeout),
        "session.election": lambda: session.election("e", timeout=timeout),
        "lock.acquire": lambda: lock.acquire(timeout=timeout),
        "election.campaign": lambda: election.campaign("v", timeout=timeout),
        "connect_timeout": lambda: Client.connect("127.0.0.1:2379", connect_timeout=timeout),
        "request_timeout": lambda: Client.connect("127.0.0.1:2379", request_timeout=timeout),
    }
    for what, make in makers.items():
        with pytest.raises(etcd_recipes.InvalidArgumentError, match="seconds"):
            await settle(make())
            raise AssertionError(f"{what}: no error for timeout={timeout}")
    await session.close()


def test_error_hierarchy() -> None:
    classes = [
        etcd_recipes.InvalidArgumentError, etcd_recipes.ConnectError, etcd_recipes.EtcdTimeoutError,
        etcd_recipes.SessionLostError, etcd_recipes.LockTimeoutError, etcd_recipes.LockLostError,
        etcd_recipes.NotLeaderError, etcd_recipes.FencedError, etcd_recipes.CompactedError,
        etcd_recipes.PermissionDeniedError, etcd_recipes.DecodeError, etcd_recipes.ClosedError,
        etcd_recipes.EtcdError,
    ]
    codes = {c.code for c in classes}
    assert len(codes) == len(classes)
    for c in classes:
        assert issubclass(c, etcd_recipes.EtcdRecipesError)
        assert c.__module__ == "etcd_recipes"
    assert issubclass(etcd_recipes.EtcdTimeoutError, TimeoutError)
    assert issubclass(etcd_recipes.ConnectError, ConnectionError)
    assert issubclass(etcd_recipes.InvalidArgumentError, ValueError)


def test_awaitables_need_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="event loop"):
        Client.connect("127.0.0.1:2379")  # type: ignore[unused-coroutine]


# ------------------------------------------------------------------ results back to their loop


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc")
def test_results_reach_the_right_loop_of_many_and_loops_leave_nothing_open(etcd: EtcdCluster, ns: str) -> None:
    # Each loop gets its own completion queue (a socket the loop watches); results of
    # concurrent calls from loops in several threads must each reach their own loop, and a
    # closed loop must leave no socket open behind it, even while it is still referenced.
    async def connect() -> Client:
        return await Client.connect(etcd.endpoints, namespace=ns)

    client = asyncio.run(connect())

    async def burst(tag: str, n: int) -> list[str]:
        await client.put(f"{tag}/k", tag)
        got = await asyncio.wait_for(asyncio.gather(*(client.get_string(f"{tag}/k") for _ in range(n))), EVENTUALLY)
        return [g or "" for g in got]

    assert asyncio.run(burst("warm", 10)) == ["warm"] * 10
    before = open_fds()
    errors: list[BaseException] = []

    closed: list[asyncio.AbstractEventLoop] = []  # still referenced: closing must be enough

    def thread(t: int) -> None:
        try:
            for i in range(10):
                tag = f"t{t}-{i}"
                loop = asyncio.new_event_loop()
                try:
                    got = loop.run_until_complete(burst(tag, 200))
                finally:
                    loop.close()
                closed.append(loop)
                assert got == [tag] * 200, summary([g for g in got if g != tag])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=thread, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not any(th.is_alive() for th in threads), "a loop never got its results"
    if errors:
        raise errors[0]
    # 40 loops were closed; a socket pair left per loop would be 80 files.
    assert open_fds() <= before + 4, f"{open_fds() - before} more files open than before the 40 loops"

    async def close() -> None:
        await client.close()

    asyncio.run(close())


def test_a_result_for_a_closed_loop_is_let_go(etcd: EtcdCluster, ns: str) -> None:
    # A call still running when its loop is closed: its result (here a lock guard) must be
    # dropped when it comes (so the lock is released), not kept for a loop that will never
    # run again, even while that loop object is still referenced.
    holder, waiter = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        async def connect() -> Client:
            return await Client.connect(etcd.endpoints, namespace=ns)

        client = holder.run_until_complete(connect())

        async def acquire(timeout: float | None = None) -> etcd_recipes.LockGuard:
            return await client.lock("closed-loop", ttl=10).acquire(timeout=timeout)

        async def start_waiting() -> asyncio.Future[etcd_recipes.LockGuard]:
            return asyncio.ensure_future(client.lock("closed-loop", ttl=10).acquire())

        async def release(g: etcd_recipes.LockGuard) -> None:
            await g.release()

        async def close() -> None:
            await client.close()

        guard = holder.run_until_complete(acquire())
        pending = waiter.run_until_complete(start_waiting())
        waiter.close()
        assert not pending.done()
        holder.run_until_complete(release(guard))
        # The waiter gets the lock, for a loop that is closed: the guard must be let go.
        third = holder.run_until_complete(acquire(timeout=EVENTUALLY))
        holder.run_until_complete(release(third))
        assert not pending.done()
        holder.run_until_complete(close())
    finally:
        holder.close()
        waiter.close()


# ------------------------------------------------------------------ logging


async def test_tracing_events_reach_python_logging(etcd: EtcdCluster, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="etcd_recipes")
    async with await Client.connect(etcd.endpoints) as c:  # connect re-reads the level
        session = await c.session(ttl=5)
        await session.close()
    expected: dict[str, Callable[[str], bool]] = {
        "connected to etcd": lambda m: "connected to etcd" in m,
        "lease granted <id>": lambda m: "lease granted" in m and f"{session.lease_id:x}" in m,
        "lease revoked": lambda m: "lease revoked" in m,
    }

    def messages() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name.startswith("etcd_recipes")]

    def missing() -> list[str]:
        msgs = messages()
        return [name for name, seen in expected.items() if not any(seen(m) for m in msgs)]

    # Records reach `logging` from the runtime's threads: wait until every one arrived.
    await wait_until(lambda: not missing(), lambda: f"log records {missing()} missing; got {summary(messages())}")


# ------------------------------------------------------------------ interpreter exit

EXIT_SCRIPT = """
import asyncio, sys, time, etcd_recipes

async def main():
    client = await etcd_recipes.Client.connect(sys.argv[1:])
    session = await client.session(ttl=30)
    asyncio.ensure_future(session.lost())           # a pending Rust future
    await client.put("exit-test", "x")
    print("ready", time.monotonic(), flush=True)
    # return without closing anything

asyncio.run(main())
"""

EXIT_SCRIPT_NO_LOOP_CLEANUP = """
import asyncio, sys, logging, time, etcd_recipes
logging.basicConfig(level=logging.DEBUG)          # keep the log bridge busy at exit

async def main():
    global client, session
    client = await etcd_recipes.Client.connect(sys.argv[1:])
    session = await client.session(ttl=30)
    for _ in range(20):
        asyncio.ensure_future(client.get("k"))      # in flight at exit
    print("ready", time.monotonic(), flush=True)
    sys.exit(0)

loop = asyncio.new_event_loop()
loop.run_until_complete(main())
"""


@pytest.mark.parametrize("script", [EXIT_SCRIPT, EXIT_SCRIPT_NO_LOOP_CLEANUP], ids=["asyncio.run", "sys.exit"])
def test_exit_without_closing_is_clean_and_quick(etcd: EtcdCluster, script: str) -> None:
    for _ in range(3):
        p = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script), *etcd.endpoints],
            capture_output=True, text=True, timeout=60, env=dict(os.environ),
        )
        exited = time.monotonic()  # CLOCK_MONOTONIC: the same clock in the child
        assert p.returncode == 0, f"rc={p.returncode}\nstdout={tail(p.stdout)}\nstderr={tail(p.stderr)}"
        m = re.search(r"^ready (\S+)$", p.stdout, re.M)
        assert m, tail(p.stdout)
        assert "panick" not in p.stderr and "Fatal" not in p.stderr, tail(p.stderr)
        # From the end of the program to the end of the process (interpreter start-up on a
        # loaded machine is not what this is about): no waiting out a TTL or a request timeout.
        elapsed = exited - float(m.group(1))
        assert elapsed < 5, f"exit took {elapsed:.1f} s"


def test_pytest_plugin_fixture_is_registered(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.has_plugin("etcd_recipes")
