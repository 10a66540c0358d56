"""A process forked after the package was used (Celery's prefork pool, gunicorn
--preload, multiprocessing with fork): the child gets a runtime of its own, the clients it
inherited are closed in it (their connections' threads stayed in the parent), clients it
makes work, and its exit closes only what it made: the parent's leases stay."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable

import etcd_recipes
from etcd_recipes import _native, sync
from etcd_recipes.testing import EtcdCluster


def in_fork(body: Callable[[], None], within: float = 60.0) -> int:
    """Run `body` in a forked child; its exit code (0: returned, 2: raised)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 2
        try:
            body()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + within
    while True:  # wait for the child's exit (bounded: a hang is the failure this catches)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"the forked child did not finish within {within} s")
        time.sleep(0.02)


def test_blocking_face_in_a_forked_child(etcd: EtcdCluster, ns: str) -> None:
    parent = sync.Client.connect(etcd.endpoints, namespace=ns)
    session = parent.session(ttl=30)
    parent.put("owner", "parent")

    def child() -> None:
        # Inherited: closed here, at once (not a hang on a connection the parent owns).
        t = time.monotonic()
        try:
            parent.put("owner", "child via the parent's client")
            raise AssertionError("the inherited client worked in the child")
        except etcd_recipes.ClosedError as e:
            assert "forked" in str(e), str(e)
        assert parent.is_closed and time.monotonic() - t < 5
        # Its own: works, locks included, on a runtime and loop thread of the child's own.
        own = sync.Client.connect(etcd.endpoints, namespace=ns)
        with own.lock("forked", ttl=10, timeout=10) as guard:
            guard.put("owner", "child")
        mine = own.session(ttl=30)
        own.put("child-lease", str(mine.lease_id))
        # What the exit hook does: closes the child's clients only.
        _native._shutdown()
        assert own.is_closed

    assert in_fork(child) == 0
    assert parent.get_string("owner") == "child"
    child_lease = int(parent.get_string("child-lease") or "0")
    assert child_lease and not parent.lease_exists(child_lease), "the child's exit left its lease"
    assert session.is_alive and parent.lease_exists(session.lease_id), "the child's exit revoked the parent's lease"
    parent.close()


def test_asyncio_face_in_a_forked_child(etcd: EtcdCluster, ns: str) -> None:
    async def parent_part() -> int:
        async with await etcd_recipes.Client.connect(etcd.endpoints, namespace=ns) as c:
            await c.put("k", "parent")
            return await c.put("k", "parent again")

    asyncio.run(parent_part())

    def child() -> None:
        async def body() -> None:
            async with await etcd_recipes.Client.connect(etcd.endpoints, namespace=ns) as c:
                async with c.lock("forked-async", ttl=10, timeout=10):
                    await c.put("k", "child")

        errors: list[BaseException] = []

        def run() -> None:  # a thread of its own: the forking thread may have had a loop
            try:
                asyncio.run(body())
            except BaseException as e:
                errors.append(e)

        t = threading.Thread(target=run)
        t.start()
        t.join(30)
        assert not t.is_alive(), "the child's asyncio client hung"
        if errors:
            raise errors[0]

    assert in_fork(child) == 0
    check = sync.Client.connect(etcd.endpoints, namespace=ns)
    assert check.get_string("k") == "child"
    check.close()
