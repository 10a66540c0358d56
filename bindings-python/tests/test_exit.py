"""Interpreter exit while a lock acquisition is still waiting (another process holds
the lock): the process exits at once with code 0, and its waiter key is gone from etcd
right away (deleted, or its lease revoked), not one TTL later."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import time

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


HOLDER = """
import asyncio, sys, etcd_recipes

async def main():
    global keep
    client = await etcd_recipes.Client.connect(sys.argv[2:], namespace=sys.argv[1])
    guard = await client.lock("exitheld", ttl=30).acquire()
    registration = await client.register("exitsvc", "i-1", "10.0.0.1:80", ttl=30)
    leadership = await client.election("exitelect", ttl=30).campaign("me")
    keep = (client, guard, registration, leadership)
    print("holding", flush=True)
    sys.exit(0)                         # nothing released, closed or resigned

asyncio.new_event_loop().run_until_complete(main())
"""


async def test_exit_while_holding_releases_everything(etcd: EtcdCluster, client: Client, ns: str) -> None:
    p = await asyncio.create_subprocess_exec(
        sys.executable, "-c", textwrap.dedent(HOLDER), ns, *etcd.endpoints,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(p.communicate(), 60)
    assert p.returncode == 0 and out == b"holding\n", f"rc={p.returncode}\n{tail(out)}\n{tail(err)}"
    # TTLs are 30 s: the lock, the instance and the leader key go at once, with their leases
    # (revoked at exit; the deadline is generous for a loaded machine, and well below the TTL).
    await wait_until(lambda: lock_entries_empty(etcd, f"{ns}exitheld/"), "the lock key gone")
    await wait_until(lambda: no_instances(client, "exitsvc"), "the instance gone")
    await wait_until(lambda: no_leader(client, "exitelect"), "the leader key gone")


async def lock_entries_empty(etcd: EtcdCluster, prefix: str) -> bool:
    return await lock_entries(etcd, prefix) == []


async def no_instances(client: Client, service: str) -> bool:
    return await client.list_instances(service) == []


async def no_leader(client: Client, name: str) -> bool:
    return await client.leader(name) is None
