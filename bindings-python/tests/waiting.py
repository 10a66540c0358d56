"""Waiting for what a test asserts on, instead of sleeping for a fixed time.

A passing test never waits out a deadline, so deadlines for "eventually" conditions are
generous: the suite must pass on a loaded machine."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence

# For things that normally take milliseconds.
EVENTUALLY = 20.0


def tail(text: str | bytes, n: int = 2000) -> str:
    """The last `n` characters of `text` (for assertion messages: a few KiB at most)."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return text if len(text) <= n else f"[... {len(text) - n} chars cut ...]" + text[-n:]


def summary(items: Sequence[object], n: int = 10) -> str:
    """The length and the last `n` items of a list (for assertion messages)."""
    return f"{len(items)} items, last {min(n, len(items))}: {list(items[-n:])!r}"


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]],
    what: str | Callable[[], str],
    timeout: float = EVENTUALLY,
    interval: float = 0.02,
) -> None:
    """Poll `condition` (sync, or async) until it is true; fail after `timeout` s,
    saying `what` (a text, or a function computing one) was never seen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        ok = condition()
        if inspect.isawaitable(ok):
            ok = await ok
        if ok:
            return
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what() if callable(what) else what}")
        await asyncio.sleep(interval)


def wait_until_sync(
    condition: Callable[[], bool],
    what: str | Callable[[], str],
    timeout: float = EVENTUALLY,
    interval: float = 0.02,
) -> float:
    """`wait_until` for blocking code: poll `condition` until it is true, return how many
    seconds that took; fail after `timeout` s saying `what` was never seen."""
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not within {timeout:g} s: {what() if callable(what) else what}")
        time.sleep(interval)
    return time.monotonic() - t0
