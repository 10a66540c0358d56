"""Process exit: whatever way a process ends (normal end, exception, sys.exit, SIGTERM,
SIGINT, a client never closed), it exits at once and leaves nothing in etcd: no lease,
no lock key, no leader key, no registration; and it says nothing alarming on the way."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
from collections.abc import Callable

import pytest

from etcd_recipes import Client
from etcd_recipes.testing import EtcdCluster

from test_interop import lock_entries, wait_for_entries
from waiting import tail, wait_until

WAITER = """
import asyncio, sys, etcd_recipes

MODE = sys.argv[1]

async def main():
    client = await etcd_recipes.Client.connect(sys.argv[3:], namespace=sys.argv[2])
    if MODE == "session":
        session = await client.session(ttl=30)
        pending = asyncio.ensure_future(client.lock("exitwait", session=session).acquire())
    else:
        pending = asyncio.ensure_future(client.lock("exitwait", ttl=30).acquire())
    print("waiting", flush=True)
    go = asyncio.Event()
    asyncio.get_running_loop().add_reader(sys.stdin.fileno(), go.set)
    await go.wait()                     # the test saw our key queued and wrote a line
    if MODE == "sys.exit":
        sys.exit(0)                     # from inside the loop: nothing cancelled, loop never closed
    # "return" / "session": asyncio.run cancels the pending acquire, then the interpreter exits

if MODE == "sys.exit":
    asyncio.new_event_loop().run_until_complete(main())
else:
    asyncio.run(main())
"""


@pytest.mark.parametrize("mode", ["return", "sys.exit", "session"])
async def test_exit_with_a_pending_lock_wait(etcd: EtcdCluster, client: Client, ns: str, mode: str) -> None:
    prefix = f"{ns}exitwait/"
    async with client.lock("exitwait", ttl=5) as guard:
        p = await asyncio.create_subprocess_exec(
            sys.executable, "-c", textwrap.dedent(WAITER), mode, ns, *etcd.endpoints,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert p.stdout is not None and p.stdin is not None
            assert (await asyncio.wait_for(p.stdout.readline(), 60)) == b"waiting\n"
            entries = await wait_for_entries(etcd, prefix, 2)
            assert entries[0][0] == guard.key
            t0 = time.monotonic()
            p.stdin.write(b"go\n")
            await p.stdin.drain()
            out, err = await asyncio.wait_for(p.communicate(), 60)
            elapsed = time.monotonic() - t0
            assert p.returncode == 0, f"rc={p.returncode}\n{tail(out)}\n{tail(err)}"
            assert b"panicked" not in err and b"Fatal" not in err and b"Traceback" not in err, tail(err)
            # At once: the exit-time revocation is bounded (1.5 s); no waiting out the
            # request timeout (10 s) or the TTL (30 s). Loose for a loaded machine.
            assert elapsed < 8, f"exit took {elapsed:.1f} s"
            # The waiter's TTL is 30 s: its key must be gone well before that.
            left: list[str] = []

            async def only_holder_left() -> bool:
                nonlocal left
                left = [k for k, _ in await lock_entries(etcd, prefix)]
                return left == [guard.key]

            await wait_until(only_holder_left, lambda: f"waiter key left behind after exit: {left}")
            assert guard.is_held
        finally:
            if p.returncode is None:
                p.kill()
                await p.wait()


CHILD = """
import asyncio, faulthandler, signal, sys, time, etcd_recipes

faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for a dump if we hang

MODE, NS, *ENDPOINTS = sys.argv[1:]


async def quietly(aw):
    try:
        await aw
    except (etcd_recipes.EtcdRecipesError, asyncio.CancelledError):
        pass


async def follow(view):
    async for _ in view:
        pass


async def hold_everything(client):
    global keep
    guard = await client.lock("held", ttl=60).acquire()
    waiter = asyncio.ensure_future(quietly(client.lock("held", ttl=60).acquire()))
    leadership = await client.election("boss", ttl=60).campaign("me")
    registration = await client.register("svc", "i-1", "10.0.0.1:80", ttl=60)
    view = await client.discover("svc")
    follower = asyncio.ensure_future(follow(view))
    session = await client.session(ttl=60)
    queue = await client.config("held/", prefix=True)
    while len(queue.keys()) < 2:          # until the waiter is queued behind the holder
        await asyncio.sleep(0.01)
    keep = (guard, waiter, leadership, registration, view, follower, session, queue)
    leases = [guard.lease_id, leadership.lease_id, registration.lease_id, session.lease_id]
    print("ready", time.monotonic(), *leases, flush=True)


async def main():
    if MODE == "normal":
        async with await etcd_recipes.Client.connect(ENDPOINTS, namespace=NS) as client:
            await hold_everything(client)
        return
    client = await etcd_recipes.Client.connect(ENDPOINTS, namespace=NS)
    await hold_everything(client)
    if MODE == "exception":
        raise RuntimeError("boom")
    if MODE == "sys.exit":
        sys.exit(3)
    if MODE in ("SIGTERM", "SIGINT"):
        await asyncio.Event().wait()
    # "forgot": return without closing anything

asyncio.run(main())
"""

# The same for the blocking face: the waiter and the view's follower are (daemon) threads;
# a signal finds the main thread waiting in a blocking call.
SYNC_CHILD = """
import faulthandler, signal, sys, threading, time, etcd_recipes

faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for a dump if we hang
from etcd_recipes import sync

MODE, NS, *ENDPOINTS = sys.argv[1:]


def quietly(f):
    try:
        f()
    except etcd_recipes.EtcdRecipesError:
        pass


def follow(view):
    for _ in view:
        pass


def hold_everything(client):
    global keep
    guard = client.lock("held", ttl=60).acquire()
    waiter = threading.Thread(target=quietly, args=(client.lock("held", ttl=60).acquire,), daemon=True)
    waiter.start()
    leadership = client.election("boss", ttl=60).campaign("me")
    registration = client.register("svc", "i-1", "10.0.0.1:80", ttl=60)
    view = client.discover("svc")
    follower = threading.Thread(target=quietly, args=(lambda: follow(view),), daemon=True)
    follower.start()
    session = client.session(ttl=60)
    queue = client.config("held/", prefix=True)
    while len(queue.keys()) < 2:          # until the waiter is queued behind the holder
        time.sleep(0.01)
    keep = (guard, waiter, leadership, registration, view, follower, session, queue)
    leases = [guard.lease_id, leadership.lease_id, registration.lease_id, session.lease_id]
    print("ready", time.monotonic(), *leases, flush=True)


def main():
    if MODE == "normal":
        with sync.Client.connect(ENDPOINTS, namespace=NS) as client:
            hold_everything(client)
        return
    client = sync.Client.connect(ENDPOINTS, namespace=NS)
    hold_everything(client)
    if MODE == "exception":
        raise RuntimeError("boom")
    if MODE == "sys.exit":
        sys.exit(3)
    if MODE in ("SIGTERM", "SIGINT"):
        for _ in client.observe_leader("boss"):   # a blocking wait in the main thread
            pass
    # "forgot": return without closing anything

main()
"""
CHILDREN = {"async": CHILD, "sync": SYNC_CHILD}

# Exit status per way of ending (SIGINT: Python re-raises it once finalized).
ENDINGS = {"normal": {0}, "forgot": {0}, "exception": {1}, "sys.exit": {3}, "SIGTERM": {-signal.SIGTERM},
           "SIGINT": {-signal.SIGINT, 128 + signal.SIGINT}}
# What a process that ends on purpose must not say.
ALARMING = ["lost", "putting it again", "re-registering", "goes with its lease", "not everything closed",
            "could not", "failed", "panicked", "Fatal Python error", "Exception ignored", "Segmentation"]


async def leases_in(etcd: EtcdCluster) -> set[int]:
    p = await asyncio.create_subprocess_exec(
        *etcd.etcdctl, "lease", "list", env=dict(os.environ, ETCDCTL_API="3"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await p.communicate()
    assert p.returncode == 0, tail(err)
    return {int(line, 16) for line in out.decode().split()[3:]}  # after "found N leases"


async def stacks_of(p: asyncio.subprocess.Process) -> str:
    """A hung child's Python stacks: it dumps them to stderr on SIGUSR1 (faulthandler, from
    a C signal handler, so also when its main thread is stuck in native code). Read until
    its stderr has been quiet for a second (at most 10 s): only on the failure path."""
    assert p.stderr is not None
    p.send_signal(signal.SIGUSR1)
    got = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            chunk = await asyncio.wait_for(p.stderr.read(65536), 1)
        except asyncio.TimeoutError:
            break
        if not chunk:
            break
        got += chunk
    return tail(got.decode(errors="replace"), 4000)


@pytest.mark.parametrize("ending", list(ENDINGS))
@pytest.mark.parametrize("face", list(CHILDREN))
async def test_any_exit_leaves_nothing_behind(etcd_factory: Callable[..., EtcdCluster], face: str, ending: str) -> None:
    """A held lock, a queued waiter, a leadership, a registration, a session and views, all
    with TTL 60 s: however the process ends, right after it is gone etcd has no lease and no
    key of it (expiry cannot explain that), and its stderr has nothing alarming. On both
    faces: asyncio and blocking."""
    exit_etcd = etcd_factory(1)  # of its own: nothing but the child ever holds a lease in it
    ns = f"exit-{ending}/"
    p = await asyncio.create_subprocess_exec(
        sys.executable, "-c", textwrap.dedent(CHILDREN[face]), ending, ns, *exit_etcd.endpoints,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert p.stdout is not None
        line = (await asyncio.wait_for(p.stdout.readline(), 60)).decode().split()
        assert line[:1] == ["ready"], f"child did not get ready: {line!r}"
        ready, leases = float(line[1]), {int(x) for x in line[2:]}
        assert len(leases) == 4
        if ending.startswith("SIG"):
            p.send_signal(getattr(signal, ending))
        try:
            out, err = await asyncio.wait_for(p.communicate(), 60)
        except asyncio.TimeoutError:
            raise AssertionError(f"{ending}: the child did not exit within 60 s; its threads:\n{await stacks_of(p)}") from None
        exited = time.monotonic()  # CLOCK_MONOTONIC: the same clock in the child
    finally:
        if p.returncode is None:
            p.kill()
            await p.wait()
    stderr = err.decode(errors="replace")
    said = [phrase for phrase in ALARMING if phrase in stderr]
    assert p.returncode in ENDINGS[ending] and not said, (
        f"{ending}: exit status {p.returncode} (expected one of {sorted(ENDINGS[ending])}), alarming phrases "
        f"{said} in {len(stderr)} chars of stderr; its end:\n{tail(stderr, 800)}"
    )
    # Checked at once: the process revoked what it owned before it was gone.
    left = await leases_in(exit_etcd)
    assert left == set(), f"{ending}: {len(left)} leases left ({len(left & leases)} of the child's 4)"
    keys = [k for k, _ in await lock_entries(exit_etcd, ns)]
    assert keys == [], f"{ending}: {len(keys)} keys left: {keys[:5]}"
    # Bounded (2 s budget), loose for a loaded machine.
    assert exited - ready < 8, f"{ending}: the child took {exited - ready:.1f} s to exit"


CHAINED = """
import signal, sys

def mine(signum, frame):
    print("the application's handler ran", flush=True)
    sys.exit(7)

signal.signal(signal.SIGTERM, mine)     # installed before etcd_recipes is imported

import asyncio, etcd_recipes

async def main():
    client = await etcd_recipes.Client.connect(sys.argv[1:])
    guard = await client.lock("chained", ttl=60).acquire()
    print("ready", guard.lease_id, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_sigterm_runs_the_handler_installed_before_import(etcd: EtcdCluster, client: Client) -> None:
    p = await asyncio.create_subprocess_exec(
        sys.executable, "-c", textwrap.dedent(CHAINED), *etcd.endpoints,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert p.stdout is not None
        line = (await asyncio.wait_for(p.stdout.readline(), 60)).decode().split()
        assert line[:1] == ["ready"], f"child did not get ready: {line!r}"
        p.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(p.communicate(), 60)
    finally:
        if p.returncode is None:
            p.kill()
            await p.wait()
    assert p.returncode == 7 and b"the application's handler ran" in out, f"rc={p.returncode}\n{tail(err, 800)}"
    assert not await client.lease_exists(int(line[1]))  # revoked before the application's handler ran
