"""A Python lock and etcd's own Go `concurrency.Mutex` (tests/go/peer, built offline by
tests/go/build.sh; scripts/setup installs Go and the etcd Go sources) exclude each other,
in one FIFO queue."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from etcd_recipes import Client, LockTimeoutError
from etcd_recipes.testing import EtcdCluster

from test_interop import lock_entries, wait_for_entries
from waiting import EVENTUALLY, tail

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def go_peer() -> Path:
    """The Go peer binary (built if stale; fails, not skips, when Go is missing)."""
    r = subprocess.run(["bash", str(ROOT / "tests/go/build.sh"), "peer"], capture_output=True, text=True)
    assert r.returncode == 0, f"building tests/go/peer failed: {tail(r.stderr)}"
    return Path(r.stdout.strip())


class Peer:
    """A running Go peer: its JSON events, and its stdin for commands."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def expect(self, event: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), EVENTUALLY)
        assert line, f"Go peer exited ({await self.proc.wait()}) before {event!r}"
        ev: dict[str, Any] = json.loads(line)
        assert ev.get("event") == event, f"wanted {event!r}, got {tail(line)}"
        return ev

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{line}\n".encode())


@pytest.fixture
async def spawn(go_peer: Path, etcd: EtcdCluster) -> AsyncIterator[Any]:
    procs: list[asyncio.subprocess.Process] = []

    async def start(*args: str) -> Peer:
        p = await asyncio.create_subprocess_exec(
            str(go_peer), "--endpoints", ",".join(etcd.endpoints), *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )
        procs.append(p)
        return Peer(p)

    yield start
    for p in procs:
        if p.returncode is None:
            p.kill()
            await p.wait()


async def test_python_lock_and_go_mutex_exclude_each_other(
    etcd: EtcdCluster, client: Client, ns: str, spawn: Any
) -> None:
    name = "go-mutex"
    prefix = f"{ns}{name}/"
    # Go holds: our try_acquire gives up; our acquire queues, and gets the lock only after
    # Go has unlocked, with a higher fencing token than Go's key revision.
    go: Peer = await spawn("mutex", f"{ns}{name}")
    await go.expect("session")
    held = await go.expect("acquired")
    assert held["key"] == f"{prefix}{held['lease']:x}"
    lock = client.lock(name, ttl=10)
    with pytest.raises(LockTimeoutError):
        await lock.try_acquire()
    waiting = asyncio.ensure_future(lock.acquire())
    entries = await wait_for_entries(etcd, prefix, 2)
    assert entries[0] == (held["key"], held["rev"])
    assert not waiting.done(), "we got the lock Go holds"
    go.send("release")
    await go.expect("released")
    guard = await asyncio.wait_for(waiting, EVENTUALLY)
    assert (guard.key, guard.fencing_token) == entries[1]
    assert guard.fencing_token > held["rev"]

    # We hold: a Go Lock queues behind us and learns it holds only after our release.
    go = await spawn("mutex", f"{ns}{name}")
    queued = await go.expect("session")
    entries = await wait_for_entries(etcd, prefix, 2)
    assert entries[1][0] == queued["key"]
    before = await client.revision()  # we still hold at this revision
    assert guard.is_held
    await guard.release()
    got = await go.expect("acquired")
    assert got["header_rev"] > before, f"Go acquired at {got['header_rev']}, while we held at {before}"
    assert got["rev"] > guard.fencing_token
    go.send("release")
    await go.expect("released")
    assert await lock_entries(etcd, prefix) == []
