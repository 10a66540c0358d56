"""A Python lock and other implementations of the same wire protocol exclude each other:
the Rust example binary built from this workspace (`lock`), and `etcdctl lock`."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
from pathlib import Path

import pytest

import etcd_recipes
from etcd_recipes import Client
from etcd_recipes.testing import EtcdCluster

from waiting import EVENTUALLY, tail

ROOT = Path(__file__).resolve().parents[2]


def rust_lock_binary() -> Path | None:
    """`$ETCD_RECIPES_LOCK_BIN`, else `<target>/debug/lock` (test.sh builds it first:
    `cargo build -q -p etcd-recipes-examples --bin lock`)."""
    given = os.environ.get("ETCD_RECIPES_LOCK_BIN")
    if given:
        return Path(given)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    for profile in ("debug", "release"):
        if (target / profile / "lock").is_file():
            return target / profile / "lock"
    return None


LOCK_BIN = rust_lock_binary()
needs_rust = pytest.mark.skipif(
    LOCK_BIN is None,
    reason="Rust lock example not built: run `cargo build -p etcd-recipes-examples --bin lock` "
    "(bindings-python/test.sh does) or set ETCD_RECIPES_LOCK_BIN",
)


async def lock_entries(etcd: EtcdCluster, prefix: str) -> list[tuple[str, int]]:
    """(key, create revision) of every key under `prefix`, oldest first (via etcdctl)."""
    p = await asyncio.create_subprocess_exec(
        *etcd.etcdctl, "get", "--prefix", prefix, "-w", "json",
        env=dict(os.environ, ETCDCTL_API="3"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await p.communicate()
    assert p.returncode == 0, err
    kvs = json.loads(out).get("kvs", [])
    return sorted(((base64.b64decode(kv["key"]).decode(), int(kv["create_revision"])) for kv in kvs),
                  key=lambda e: e[1])


async def wait_for_entries(etcd: EtcdCluster, prefix: str, n: int, timeout: float = EVENTUALLY) -> list[tuple[str, int]]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        entries = await lock_entries(etcd, prefix)
        if len(entries) == n:
            return entries
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"expected {n} keys under {prefix}, have {len(entries)}: {entries[:10]}")
        await asyncio.sleep(0.02)


async def read_until(stream: asyncio.StreamReader | None, pattern: str, timeout: float = EVENTUALLY) -> re.Match[str]:
    assert stream is not None
    seen: list[str] = []
    while True:
        line = (await asyncio.wait_for(stream.readline(), timeout)).decode()
        if not line:
            pytest.fail(f"stream ended before a line matching {pattern!r}; got:\n{tail(''.join(seen))}")
        seen.append(line)
        m = re.search(pattern, line)
        if m:
            return m


async def assert_quiet(stream: asyncio.StreamReader | None, forbidden: str, seconds: float) -> None:
    """The other holder must not report the lock for `seconds` (while we hold it)."""
    assert stream is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            line = (await asyncio.wait_for(stream.readline(), left)).decode()
        except asyncio.TimeoutError:
            return
        assert forbidden not in line, f"the other side got the lock while we held it: {line!r}"
        if not line:
            return


def rust_env(etcd: EtcdCluster) -> dict[str, str]:
    return dict(os.environ, ETCD_ENDPOINTS=",".join(etcd.endpoints), RUST_LOG="warn")


@needs_rust
async def test_python_lock_excludes_rust_holder(etcd: EtcdCluster, client: Client, ns: str) -> None:
    assert LOCK_BIN is not None
    prefix = f"{ns}interop-a/"
    rust: asyncio.subprocess.Process | None = None
    try:
        async with client.lock("interop-a", ttl=5) as guard:
            rust = await asyncio.create_subprocess_exec(
                str(LOCK_BIN), f"{ns}interop-a", env=rust_env(etcd),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            await read_until(rust.stdout, r"^Waiting for lock")
            entries = await wait_for_entries(etcd, prefix, 2)  # the Rust contender queued behind us
            assert entries[0] == (guard.key, guard.fencing_token)
            await assert_quiet(rust.stdout, "Holding", 1.0)
            assert guard.is_held
            await guard.put("interop-a-owner", "python")  # fenced: proves we still own it
        m = await read_until(rust.stdout, r"^Holding (\S+) with fencing token (\d+)")
        assert m.group(1) == entries[1][0] and int(m.group(2)) == entries[1][1] > guard.fencing_token
        out, err = await asyncio.wait_for(rust.communicate(), EVENTUALLY)
        assert rust.returncode == 0, tail(err)
        assert "Released." in out.decode(), tail(out)
        assert await lock_entries(etcd, prefix) == []
    finally:
        if rust is not None and rust.returncode is None:
            rust.kill()
            await rust.wait()


@needs_rust
async def test_rust_holder_excludes_python_lock(etcd: EtcdCluster, client: Client, ns: str) -> None:
    assert LOCK_BIN is not None
    prefix = f"{ns}interop-b/"
    rust = await asyncio.create_subprocess_exec(
        str(LOCK_BIN), f"{ns}interop-b", env=rust_env(etcd),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        m = await read_until(rust.stdout, r"^Holding (\S+) with fencing token (\d+)")
        rust_key, rust_token = m.group(1), int(m.group(2))
        with pytest.raises(etcd_recipes.LockTimeoutError):
            await client.lock("interop-b", ttl=5).try_acquire()
        waiter = asyncio.ensure_future(client.lock("interop-b", ttl=5).acquire())
        entries = await wait_for_entries(etcd, prefix, 2)  # our contender queued behind Rust's
        assert entries[0] == (rust_key, rust_token)
        # The Rust holder keeps the lock 3 s after "Counter is now ..."; we must wait. As
        # long as its key exists (it goes only when Rust releases), we must not hold the
        # lock: sample our state first, then look the key up.
        while True:
            done = waiter.done()
            if rust_key not in [k for k, _ in await lock_entries(etcd, prefix)]:
                break
            assert not done, "Python got the lock while the Rust example held it"
            await asyncio.sleep(0.05)
        await read_until(rust.stdout, r"^Counter is now")
        guard = await asyncio.wait_for(waiter, EVENTUALLY)
        assert guard.fencing_token == entries[1][1] > rust_token
        assert [k for k, _ in await lock_entries(etcd, prefix)] == [guard.key]
        await guard.release()
        out, err = await asyncio.wait_for(rust.communicate(), EVENTUALLY)
        assert rust.returncode == 0, tail(err)
        assert "Released." in out.decode(), tail(out)
    finally:
        if rust.returncode is None:
            rust.kill()
            await rust.wait()


async def test_etcdctl_holder_excludes_python_lock(etcd: EtcdCluster, client: Client, ns: str) -> None:
    prefix = f"{ns}interop-c/"
    # Without a command, `etcdctl lock` prints its key once it holds the lock, and holds it
    # until interrupted (then unlocks).
    ctl = await asyncio.create_subprocess_exec(
        *etcd.etcdctl, "lock", f"{ns}interop-c", env=dict(os.environ, ETCDCTL_API="3"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        ctl_key = (await read_until(ctl.stdout, r"^(\S+)$")).group(1)
        assert ctl_key.startswith(prefix)
        with pytest.raises(etcd_recipes.LockTimeoutError):
            await client.lock("interop-c", ttl=5).try_acquire()
        waiter = asyncio.ensure_future(client.lock("interop-c", ttl=5).acquire())
        entries = await wait_for_entries(etcd, prefix, 2)
        assert entries[0][0] == ctl_key
        await asyncio.sleep(0.5)  # the window in which we must keep waiting (etcdctl holds until SIGINT)
        assert not waiter.done(), "Python got the lock while etcdctl held it"
        ctl.send_signal(signal.SIGINT)
        guard = await asyncio.wait_for(waiter, EVENTUALLY)
        assert guard.fencing_token == entries[1][1] > entries[0][1]
        await asyncio.wait_for(ctl.wait(), EVENTUALLY)
        assert [k for k, _ in await lock_entries(etcd, prefix)] == [guard.key]
        await guard.release()
    finally:
        if ctl.returncode is None:
            ctl.kill()
            await ctl.wait()
