"""Process exit: whatever way the process ends, it revokes every lease it still owns.

A normal end, an unhandled exception, ``sys.exit`` and SIGINT (``KeyboardInterrupt``)
all run ``atexit`` hooks; the native module registered one at import that closes every
client (core's ``shutdown``, bounded at 2 s). SIGTERM's default action kills the process
without ``atexit``, so a handler installed here at import shuts down first, then lets
the signal do what it would have done: call the handler that was there before, or die
of SIGTERM as usual (exit status 143 / -15). A handler the application installs later
replaces this one and decides for itself (``sys.exit`` from it still runs ``atexit``).
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

from etcd_recipes import _native

_previous: Any = None


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    if callable(_previous):
        _native._shutdown()
        _previous(signum, frame)
        return
    _native._at_exit()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def install() -> None:
    """Chain our SIGTERM handler in front of the current one (main thread only; a
    handler set outside Python or SIG_IGN is left alone)."""
    global _previous
    if threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGTERM)
    if current is signal.SIG_DFL or (callable(current) and current is not _on_sigterm):
        _previous = current
        signal.signal(signal.SIGTERM, _on_sigterm)
