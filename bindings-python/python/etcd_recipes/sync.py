"""The blocking face of etcd-recipes: the whole API as plain calls, for code that is not
an asyncio program (Django and Flask views, Celery tasks, scripts, threads).

    from etcd_recipes import sync

    with sync.Client.connect(["127.0.0.1:2379"]) as client:
        with client.lock("jobs/nightly", ttl=10, timeout=30.0) as guard:
            guard.put("jobs/nightly/last-run", "now")     # only while we hold the lock

Same names, same arguments, same errors as the asyncio face (``docs/vocabulary.md``);
the idioms differ: ``with`` for ``async with``, ``for`` for ``async for``, and a call
returns its result instead of an awaitable.

Design
------
This module is a thin adapter over the asyncio face, not a second binding. The first
blocking call starts one private asyncio event loop in a daemon thread
(``etcd-recipes-sync``); each call runs the asyncio face's coroutine on that loop, on the
same Rust core and the same shared tokio runtime, and the calling thread waits for its
result on a ``concurrent.futures`` future. So there is no recipe logic and no lifecycle
here either: what a call does is what the asyncio face (hence core) does. Why not blocking
methods written in Rust: the asyncio face already converts every argument, result and
error, and already hands cancellation to core (cancelling its awaitable aborts the tokio
task, which drops the core future: a waiting lock deletes its key); a second set of Rust
methods would double the conversion code that must be kept in step, to save about 0.2 ms a
call (what this adapter costs over an awaited call on a loaded 2-core machine, where a
``get`` takes 0.7 ms; ``bindings-python/bench/sync_overhead.py`` measures it).

Waiting:

- The calling thread releases the GIL while it waits: other threads run.
- Every call that can wait takes ``timeout`` (seconds; None waits as long as it takes).
  Where the asyncio face has one (``acquire``, ``campaign``, ``receive``, ``dequeue``,
  ``wait``, ``enter``/``leave``, ``await_leader``), it is that timeout, enforced by core,
  with the same errors (``LockTimeoutError``). Where it has none (``lost``, ``changed``,
  ``LeaderLoop.wait``/``run``, an iterator's ``next``), the wait gives up with the builtin
  ``TimeoutError`` and the wait is cancelled as on Ctrl-C. Calls that only talk to etcd
  (``put``, ``get``, ``ack``, ...) are bounded by the client's ``request_timeout``.
- Ctrl-C: in the main thread a call waits in slices of 0.1 s, so SIGINT (and SIGTERM, and
  any Python signal handler) is seen within 0.1 s even when the OS delivers the signal to
  one of the runtime's threads. ``KeyboardInterrupt`` (any exception raised while
  waiting) cancels the call: when the exception reaches the caller, the call's coroutine
  has ended cancelled and core has been told to drop the wait (at most 2 s are spent
  making sure of that); core then deletes the waiter's key and closes its per-use session
  in the background, which takes one etcd round trip (milliseconds; at most the request
  timeout). If the process then exits, the exit-time shutdown revokes its leases anyway.

Threads:

- One ``Client`` (and every object made from it) may be used from any number of threads.
  A ``Lock`` used from two threads excludes them: each ``acquire`` is one contender.
- ``with lock:`` / ``with semaphore:`` remember what they entered per thread (the asyncio
  face remembers it per task): leaving the block releases what this thread entered.
- Callbacks (``on_lost``, ``on_state_change``, ``on_started_leading``, ...) run one at a
  time, in order, on one daemon thread of this module (``etcd-recipes-callbacks``), not on
  the loop thread, so a callback may call this module's blocking methods. An exception in
  a callback is logged (logger ``etcd_recipes``).
- A leader loop's work is a blocking function ``work(leadership, cancelled)`` where
  ``cancelled`` is a ``threading.Event``. Each term runs it in a new daemon thread. When
  the term must end (leadership lost, ``close()``, the client closed, ``run()`` interrupted)
  ``cancelled`` is set; the loop waits for the function to return (at most
  ``stop_timeout``), then resigns. A thread cannot be cancelled, so the work must check
  ``cancelled`` (``cancelled.wait(interval)`` instead of ``time.sleep``); a term that
  outlives ``stop_timeout`` has resigned already and its fenced writes fail with
  ``FencedError``.

Exit: at interpreter exit (normal end, exception, ``sys.exit``, ``KeyboardInterrupt``),
core's shutdown revokes every lease first (as for the asyncio face), then the loop thread
stops. SIGTERM is handled as by the asyncio face (``etcd_recipes._exit``).

Do not call this module from inside a callback of the asyncio face or from the loop
thread itself (a ``RuntimeError`` says so); from an asyncio program use the asyncio face.
Threads that wait in this module at interpreter exit should be daemon threads: Python
joins the others before it runs the exit hooks that would end their waits.

A forked child (Celery's prefork pool, gunicorn ``--preload``) starts a loop thread, a
callback thread and a runtime of its own at its first call; clients made before the fork
are closed in the child (``ClosedError``: their connections' threads stayed in the parent),
so connect again in the child, after the fork.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, Literal, Optional, TypeVar, Union, overload

from etcd_recipes import _native
from etcd_recipes._config import ConfigSnapshot
from etcd_recipes._native import (
    ClosedError,
    CompactedError,
    ComponentHealth,
    Health,
    MetricFamily,
    MetricSample,
    SessionHealth,
    ViewHealth,
    metrics_snapshot,
    metrics_text,
    ConfigChange,
    ConnectError,
    DeadLetter,
    DecodeError,
    EndpointHealth,
    EtcdError,
    EtcdRecipesError,
    EtcdTimeoutError,
    FencedError,
    Instance,
    InstanceEvent,
    InvalidArgumentError,
    LeaderEvent,
    LeaderInfo,
    LockLostError,
    LockTimeoutError,
    NotLeaderError,
    PermissionDeniedError,
    QueueItem,
    SessionLostError,
    UnknownOutcomeError,
)

__all__ = [
    "Health",
    "SessionHealth",
    "ViewHealth",
    "ComponentHealth",
    "MetricFamily",
    "MetricSample",
    "metrics_snapshot",
    "metrics_text",
    "Client",
    "Session",
    "Lock",
    "LockGuard",
    "Semaphore",
    "RwLock",
    "Election",
    "Leadership",
    "LeaderInfo",
    "LeaderObserver",
    "LeaderLoop",
    "LeaderLatch",
    "LeaderEvent",
    "LeaderEvents",
    "Work",
    "Instance",
    "Registration",
    "ServiceView",
    "InstanceSets",
    "InstanceEvent",
    "InstanceEvents",
    "ConfigView",
    "ConfigChange",
    "ConfigChanges",
    "ConfigSnapshot",
    "ConnectionStates",
    "EndpointHealth",
    "WorkQueue",
    "WorkItem",
    "DeadLetter",
    "Counter",
    "Barrier",
    "DoubleBarrier",
    "Queue",
    "PriorityQueue",
    "QueueItem",
    "EtcdRecipesError",
    "InvalidArgumentError",
    "ConnectError",
    "EtcdTimeoutError",
    "SessionLostError",
    "LockTimeoutError",
    "LockLostError",
    "NotLeaderError",
    "FencedError",
    "CompactedError",
    "PermissionDeniedError",
    "DecodeError",
    "ClosedError",
    "UnknownOutcomeError",
    "EtcdError",
]

_log = logging.getLogger("etcd_recipes")

T = TypeVar("T")
_D = TypeVar("_D")
ConnectionStateName = Literal["CONNECTED", "SUSPENDED", "RECONNECTED", "LOST"]
_Value = Union[bytes, bytearray, memoryview, str]
_Readiness = Literal["ready", "not_ready", "draining"]
_Picker = Literal["round_robin", "random", "sticky", "weighted"]
_Pem = Union[bytes, str, "os.PathLike[str]"]
_Op = Union[tuple[Literal["put"], str, _Value], tuple[Literal["delete"], str]]

# How often a waiting main thread looks at pending signals.
_SLICE = 0.1
# How long an interrupted call waits for its cancellation to have run.
_CANCEL_BUDGET = 2.0


# ------------------------------------------------------------------------------ the loop thread


class _Loop:
    """The private event loop, in a daemon thread, started by the first call."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _stopped = False

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        if cls._stopped:
            raise ClosedError("etcd_recipes.sync: the interpreter is exiting")
        loop = cls._loop
        if loop is not None:
            return loop
        with cls._lock:
            if cls._loop is None:
                ready = threading.Event()
                new = asyncio.new_event_loop()

                def serve() -> None:
                    asyncio.set_event_loop(new)
                    new.call_soon(ready.set)
                    new.run_forever()

                t = threading.Thread(target=serve, name="etcd-recipes-sync", daemon=True)
                t.start()
                ready.wait()
                cls._thread, cls._loop = t, new
                # Registered after the native module's exit hook, so it runs before it.
                atexit.register(_at_exit)
            return cls._loop

    @classmethod
    def in_loop_thread(cls) -> bool:
        return cls._thread is not None and threading.current_thread() is cls._thread


def _forget_after_fork() -> None:
    """In a forked child: the loop and callback threads stayed in the parent."""
    _Loop._lock = threading.Lock()
    _Loop._loop = None
    _Loop._thread = None
    _Loop._stopped = False
    _Callbacks._lock = threading.Lock()
    _Callbacks._queue = None


os.register_at_fork(after_in_child=_forget_after_fork)


def _at_exit() -> None:
    """Revoke what the process owns while the loop still delivers results, then stop it."""
    _native._shutdown()
    loop, t = _Loop._loop, _Loop._thread
    _Loop._stopped = True
    if loop is not None and t is not None and loop.is_running():
        loop.call_soon_threadsafe(loop.stop)
        t.join(1.0)


def _wait(fut: concurrent.futures.Future[T], timeout: float | None) -> T:
    """`fut`'s result; in the main thread in slices, so signal handlers run meanwhile.
    `concurrent.futures.TimeoutError` (builtin TimeoutError) after `timeout` s."""
    if threading.current_thread() is not threading.main_thread():
        return fut.result(timeout)
    if timeout is None:
        while True:
            try:
                return fut.result(_SLICE)
            except concurrent.futures.TimeoutError:
                continue
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            return fut.result(max(0.0, min(left, _SLICE)))
        except concurrent.futures.TimeoutError:
            if fut.done() or left <= _SLICE:
                raise


def _check_thread() -> asyncio.AbstractEventLoop:
    loop = _Loop.get()
    if _Loop.in_loop_thread():
        raise RuntimeError("etcd_recipes.sync: a blocking call from the etcd-recipes loop thread would never return")
    return loop


def _call(make: Callable[[], Awaitable[T]], timeout: float | None = None, what: str = "the call") -> T:
    """Run the awaitable `make()` (an asyncio-face call, made on the loop thread) and wait
    for its result. On any exception while waiting (KeyboardInterrupt, our own timeout),
    cancel it and wait (bounded) until the cancellation has run, then re-raise."""
    loop = _check_thread()
    ended = threading.Event()

    async def run() -> T:
        try:
            return await make()
        finally:
            ended.set()

    fut = asyncio.run_coroutine_threadsafe(run(), loop)
    try:
        return _wait(fut, timeout)
    except BaseException as e:
        if not fut.done() or not ended.is_set():
            fut.cancel()
            _settle(ended)
        if isinstance(e, concurrent.futures.TimeoutError) and timeout is not None and fut.cancelled():
            raise TimeoutError(f"{what}: not within {timeout:g} s") from None
        raise


def _settle(ended: threading.Event) -> None:
    """Wait until a cancelled call's coroutine has ended (bounded; a second Ctrl-C ends it)."""
    deadline = time.monotonic() + _CANCEL_BUDGET
    while not ended.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        ended.wait(min(left, _SLICE))


def _on_loop(fn: Callable[[], T]) -> T:
    """Call `fn()` on the loop thread (for asyncio-face members that need a running loop:
    callbacks, starting a leader loop) and give its result."""
    loop = _check_thread()
    fut: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        try:
            fut.set_result(fn())
        except BaseException as e:
            fut.set_exception(e)

    loop.call_soon_threadsafe(run)
    return _wait(fut, None)


# ------------------------------------------------------------------------------ callbacks


class _Callbacks:
    """One daemon thread that runs the callbacks, one at a time, in order."""

    _lock = threading.Lock()
    _queue: queue.SimpleQueue[tuple[Callable[..., object], tuple[Any, ...]]] | None = None

    @classmethod
    def submit(cls, cb: Callable[..., object], args: tuple[Any, ...]) -> None:
        q = cls._queue
        if q is None:
            with cls._lock:
                if cls._queue is None:
                    cls._queue = queue.SimpleQueue()
                    threading.Thread(target=cls._serve, args=(cls._queue,), name="etcd-recipes-callbacks",
                                     daemon=True).start()
                q = cls._queue
        q.put((cb, args))

    @staticmethod
    def _serve(q: queue.SimpleQueue[tuple[Callable[..., object], tuple[Any, ...]]]) -> None:
        while True:
            cb, args = q.get()
            try:
                cb(*args)
            except Exception:
                _log.exception("etcd_recipes.sync: callback %r raised", cb)
            del cb, args


def _callback(cb: Callable[..., object]) -> Callable[..., None]:
    """The asyncio face calls this on the loop thread; it hands `cb` to the callback thread."""
    if not callable(cb):
        raise TypeError(f"callback must be callable, got {type(cb).__name__}")

    def deliver(*args: Any) -> None:
        _Callbacks.submit(cb, args)

    return deliver


# ------------------------------------------------------------------------------ iterators


class _Iter(Generic[T]):
    """A blocking iterator over one of the asyncio face's async iterators."""

    def __init__(self, it: Any) -> None:
        self._a = it

    def __iter__(self) -> _Iter[T]:
        return self

    def __next__(self) -> T:
        return self.next()

    def next(self, *, timeout: float | None = None) -> T:
        """The next item; `StopIteration` at the end (or after `close()`); `TimeoutError`
        after `timeout` seconds (None: as long as it takes)."""
        try:
            v: T = _call(lambda: self._a.__anext__(), timeout, "next item")
        except StopAsyncIteration:
            raise StopIteration from None
        return v

    def close(self) -> None:
        """Stop iterating: a pending and every later `next` raise `StopIteration`."""
        _call(lambda: self._a.aclose())

    def __enter__(self) -> _Iter[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LeaderObserver(_Iter[Optional[LeaderInfo]]):
    """The current leader (None: no leader), then each change: ``for leader in observer``."""


class LeaderEvents(_Iter[LeaderEvent]):
    """A leader loop's or latch's events, from now on, until it ends."""


class InstanceSets(_Iter[list[Instance]]):
    """The current instance set, then the whole set after each change."""


class InstanceEvents(_Iter[InstanceEvent]):
    """Each instance going up, being updated or going down."""


class ConfigChanges(_Iter[ConfigChange]):
    """Each change of a config view's keys."""


class ConnectionStates(_Iter[ConnectionStateName]):
    """The client's connection state now, then every change, until the client is closed."""


# ------------------------------------------------------------------------------ per-thread entries


class _Entered(Generic[T]):
    """What ``with`` entered, per thread (a stack, for nested blocks)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_thread: dict[int, list[T]] = {}

    def push(self, x: T) -> None:
        with self._lock:
            self._by_thread.setdefault(threading.get_ident(), []).append(x)

    def pop(self) -> T | None:
        with self._lock:
            stack = self._by_thread.get(threading.get_ident())
            if not stack:
                return None
            x = stack.pop()
            if not stack:
                del self._by_thread[threading.get_ident()]
            return x


# ------------------------------------------------------------------------------ client and session


class Client:
    """One connection to etcd, shared by every recipe and every thread."""

    def __init__(self, native: _native.Client) -> None:
        self._a = native

    @staticmethod
    def connect(
        endpoints: str | Sequence[str],
        *,
        connect_timeout: float = 5.0,
        request_timeout: float = 10.0,
        user: str | None = None,
        password: str | None = None,
        ca_cert: _Pem | None = None,
        cert: _Pem | None = None,
        key: _Pem | None = None,
        tls_domain: str | None = None,
        namespace: str = "",
    ) -> Client:
        """Connect (at most `connect_timeout` seconds)."""
        return Client(
            _call(
                lambda: _native.Client.connect(
                    endpoints, connect_timeout=connect_timeout, request_timeout=request_timeout, user=user,
                    password=password, ca_cert=ca_cert, cert=cert, key=key, tls_domain=tls_domain,
                    namespace=namespace,
                )
            )
        )

    @property
    def endpoints(self) -> list[str]:
        return self._a.endpoints

    @property
    def namespace(self) -> str:
        return self._a.namespace

    @property
    def is_closed(self) -> bool:
        return self._a.is_closed

    @property
    def connection_state(self) -> ConnectionStateName:
        """"CONNECTED", "SUSPENDED", "RECONNECTED" or "LOST" (see the asyncio face)."""
        return self._a.connection_state

    def connection_states(self) -> ConnectionStates:
        """``for state in client.connection_states()``: the state now, then every change."""
        return ConnectionStates(self._a.connection_states())

    def endpoint_health(self) -> list[EndpointHealth]:
        return self._a.endpoint_health()

    def health(self) -> Health:
        """This client's coordination health now, for a readiness probe (no request to etcd)."""
        return self._a.health()

    def put(self, key: str, value: _Value) -> int:
        return _call(lambda: self._a.put(key, value))

    def get(self, key: str) -> bytes | None:
        return _call(lambda: self._a.get(key))

    def get_string(self, key: str) -> str | None:
        return _call(lambda: self._a.get_string(key))

    def delete(self, key: str) -> int:
        return _call(lambda: self._a.delete(key))

    def revision(self) -> int:
        return _call(lambda: self._a.revision())

    def lease_exists(self, lease_id: int) -> bool:
        return _call(lambda: self._a.lease_exists(lease_id))

    def revoke_lease(self, lease_id: int) -> None:
        _call(lambda: self._a.revoke_lease(lease_id))

    def session(self, *, ttl: int = 10) -> Session:
        return Session(_call(lambda: self._a.session(ttl=ttl)))

    def lock(self, name: str, *, ttl: int = 10, timeout: float | None = None, session: Session | None = None) -> Lock:
        return Lock(self._a.lock(name, ttl=ttl, timeout=timeout, session=_native_session(session)))

    def semaphore(
        self, name: str, permits: int, *, ttl: int = 10, timeout: float | None = None, session: Session | None = None
    ) -> Semaphore:
        return Semaphore(
            self._a.semaphore(name, permits, ttl=ttl, timeout=timeout, session=_native_session(session))
        )

    def rwlock(self, name: str, *, ttl: int = 10, timeout: float | None = None, session: Session | None = None) -> RwLock:
        return RwLock(self._a.rwlock(name, ttl=ttl, timeout=timeout, session=_native_session(session)))

    def election(
        self, name: str, *, ttl: int = 10, timeout: float | None = None, session: Session | None = None
    ) -> Election:
        return Election(self._a.election(name, ttl=ttl, timeout=timeout, session=_native_session(session)))

    def leader(self, name: str) -> LeaderInfo | None:
        return _call(lambda: self._a.leader(name))

    def observe_leader(self, name: str) -> LeaderObserver:
        return LeaderObserver(self._a.observe_leader(name))

    def leader_loop(
        self,
        name: str,
        value: _Value,
        *,
        ttl: int = 10,
        session: Session | None = None,
        requeue: bool = True,
        stop_timeout: float = 5.0,
    ) -> LeaderLoop:
        return LeaderLoop(
            self._a.leader_loop(
                name, value, ttl=ttl, session=_native_session(session), requeue=requeue, stop_timeout=stop_timeout
            )
        )

    def leader_latch(self, name: str, value: _Value, *, ttl: int = 10, session: Session | None = None) -> LeaderLatch:
        return LeaderLatch(self._a.leader_latch(name, value, ttl=ttl, session=_native_session(session)))

    def register(
        self,
        service: str,
        id: str,
        addr: str,
        *,
        metadata: Any = None,
        ttl: int = 10,
        readiness: _Readiness = "ready",
        self_heal: bool = True,
    ) -> Registration:
        """Register an instance (the put done); `with` it to deregister at the end."""
        registering = self._a.register(
            service, id, addr, metadata=metadata, ttl=ttl, readiness=readiness, self_heal=self_heal
        )

        async def done() -> _native.Registration:
            return await registering

        return Registration(_call(done))

    def list_instances(self, service: str) -> list[Instance]:
        return _call(lambda: self._a.list_instances(service))

    def discover(
        self,
        service: str,
        *,
        picker: _Picker = "round_robin",
        include_not_ready: bool = False,
        prefer_zone: str | None = None,
        zone_key: str = "zone",
        weight_key: str = "weight",
        down_threshold: int = 2,
        down_period: float = 30.0,
    ) -> ServiceView:
        return ServiceView(
            _call(
                lambda: self._a.discover(
                    service,
                    picker=picker,
                    include_not_ready=include_not_ready,
                    prefer_zone=prefer_zone,
                    zone_key=zone_key,
                    weight_key=weight_key,
                    down_threshold=down_threshold,
                    down_period=down_period,
                )
            )
        )

    def config(self, key: str, *, prefix: bool = False, reconcile_interval: float | None = 30.0) -> ConfigView:
        return ConfigView(_call(lambda: self._a.config(key, prefix=prefix, reconcile_interval=reconcile_interval)))

    def work_queue(
        self,
        name: str,
        *,
        ttl: int = 10,
        max_deliveries: int | None = None,
        timeout: float | None = None,
        session: Session | None = None,
    ) -> WorkQueue:
        return WorkQueue(
            self._a.work_queue(
                name, ttl=ttl, max_deliveries=max_deliveries, timeout=timeout, session=_native_session(session)
            )
        )

    def counter(self, key: str) -> Counter:
        return Counter(self._a.counter(key))

    def barrier(self, name: str, *, timeout: float | None = None) -> Barrier:
        return Barrier(self._a.barrier(name, timeout=timeout))

    def double_barrier(
        self, name: str, count: int, *, ttl: int = 10, timeout: float | None = None, session: Session | None = None
    ) -> DoubleBarrier:
        return DoubleBarrier(
            self._a.double_barrier(name, count, ttl=ttl, timeout=timeout, session=_native_session(session))
        )

    def queue(self, name: str, *, timeout: float | None = None) -> Queue:
        return Queue(self._a.queue(name, timeout=timeout))

    def priority_queue(self, name: str, *, timeout: float | None = None) -> PriorityQueue:
        return PriorityQueue(self._a.priority_queue(name, timeout=timeout))

    def close(self) -> None:
        """End everything made from this client (within 5 s). Idempotent."""
        _call(lambda: self._a.close())

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"sync.{self._a!r}"


def _native_session(s: Session | None) -> _native.Session | None:
    return None if s is None else s._a


class Session:
    """One lease kept alive in the background until closed, dropped or lost."""

    def __init__(self, native: _native.Session) -> None:
        self._a = native

    @property
    def lease_id(self) -> int:
        return self._a.lease_id

    @property
    def lease_id_hex(self) -> str:
        return self._a.lease_id_hex

    @property
    def ttl(self) -> int:
        return self._a.ttl

    @property
    def is_alive(self) -> bool:
        return self._a.is_alive

    @property
    def state(self) -> Literal["alive", "lost", "closed"]:
        return self._a.state

    def lost(self, *, timeout: float | None = None) -> str | None:
        """Wait until the session ends: the loss reason, or None when it was closed."""
        return _call(lambda: self._a.lost(), timeout, "lost()")

    def on_lost(self, callback: Callable[[str], object]) -> None:
        cb = _callback(callback)
        _on_loop(lambda: self._a.on_lost(cb))

    def lock(self, name: str, *, timeout: float | None = None) -> Lock:
        return Lock(self._a.lock(name, timeout=timeout))

    def semaphore(self, name: str, permits: int, *, timeout: float | None = None) -> Semaphore:
        return Semaphore(self._a.semaphore(name, permits, timeout=timeout))

    def rwlock(self, name: str, *, timeout: float | None = None) -> RwLock:
        return RwLock(self._a.rwlock(name, timeout=timeout))

    def election(self, name: str, *, timeout: float | None = None) -> Election:
        return Election(self._a.election(name, timeout=timeout))

    def leader_loop(self, name: str, value: _Value, *, requeue: bool = True, stop_timeout: float = 5.0) -> LeaderLoop:
        return LeaderLoop(self._a.leader_loop(name, value, requeue=requeue, stop_timeout=stop_timeout))

    def leader_latch(self, name: str, value: _Value) -> LeaderLatch:
        return LeaderLatch(self._a.leader_latch(name, value))

    def register(
        self,
        service: str,
        id: str,
        addr: str,
        *,
        metadata: Any = None,
        readiness: _Readiness = "ready",
        self_heal: bool = True,
    ) -> Registration:
        """Register an instance on this session's lease (lost with it); `with` deregisters."""
        registering = self._a.register(service, id, addr, metadata=metadata, readiness=readiness, self_heal=self_heal)

        async def done() -> _native.Registration:
            return await registering

        return Registration(_call(done))

    def close(self) -> None:
        """Revoke the lease (ending what holds on it). Idempotent."""
        _call(lambda: self._a.close())

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"sync.{self._a!r}"


# ------------------------------------------------------------------------------ lock, semaphore, rwlock


class _Fenced:
    """Writes that apply only while the holder still holds (a txn guarded by its key)."""

    _a: Any

    def put(self, key: str, value: _Value) -> int:
        """Put `value` at `key` only while held (`FencedError` otherwise)."""
        return _call(lambda: self._a.put(key, value))  # type: ignore[no-any-return]

    def delete(self, key: str) -> int:
        """Delete `key` only while held."""
        return _call(lambda: self._a.delete(key))  # type: ignore[no-any-return]

    def txn(self, ops: Sequence[_Op]) -> int:
        """Apply `[("put", k, v), ("delete", k), ...]` atomically, only while held."""
        return _call(lambda: self._a.txn(ops))  # type: ignore[no-any-return]

    def lost(self, *, timeout: float | None = None) -> str | None:
        """Wait until this ends: the loss reason, or None at a normal end."""
        return _call(lambda: self._a.lost(), timeout, "lost()")  # type: ignore[no-any-return]

    def on_lost(self, callback: Callable[[str], object]) -> None:
        """`callback(reason)` (on the callback thread) on a loss, not at a normal end."""
        cb = _callback(callback)
        _on_loop(lambda: self._a.on_lost(cb))


class LockGuard(_Fenced):
    """A held lock (or semaphore permit, or read/write hold): release it, or leave ``with``."""

    def __init__(self, native: _native.LockGuard) -> None:
        self._a = native

    @property
    def key(self) -> str:
        return self._a.key  # type: ignore[no-any-return]

    @property
    def name(self) -> str:
        return self._a.name  # type: ignore[no-any-return]

    @property
    def lease_id(self) -> int:
        return self._a.lease_id  # type: ignore[no-any-return]

    @property
    def fencing_token(self) -> int:
        return self._a.fencing_token  # type: ignore[no-any-return]

    @property
    def is_held(self) -> bool:
        return self._a.is_held  # type: ignore[no-any-return]

    def release(self) -> None:
        _call(lambda: self._a.release())

    def __enter__(self) -> LockGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"sync.{self._a!r}"


class Lock:
    """A distributed lock (etcd's Go ``concurrency.Mutex`` layout). ``with lock as guard:``
    acquires (waiting up to the lock's timeout) and releases on exit, per thread."""

    def __init__(self, native: _native.Lock) -> None:
        self._a = native
        self._entered: _Entered[LockGuard] = _Entered()

    @property
    def name(self) -> str:
        return self._a.name

    def acquire(self, *, timeout: float | None = None) -> LockGuard:
        """Wait for the lock, at most `timeout` s (default: the lock's); `LockTimeoutError` then."""
        return LockGuard(_call(lambda: self._a.acquire(timeout=timeout)))

    def try_acquire(self) -> LockGuard:
        """Take the lock if free, else `LockTimeoutError` at once."""
        return LockGuard(_call(lambda: self._a.try_acquire()))

    def __enter__(self) -> LockGuard:
        g = self.acquire()
        self._entered.push(g)
        return g

    def __exit__(self, *exc: object) -> None:
        g = self._entered.pop()
        if g is not None:
            g.release()

    def __repr__(self) -> str:
        return f"sync.{self._a!r}"


class Semaphore:
    """At most `permits` holders at once; ``with sem as permit:`` per thread."""

    def __init__(self, native: _native.Semaphore) -> None:
        self._a = native
        self._entered: _Entered[LockGuard] = _Entered()

    @property
    def name(self) -> str:
        return self._a.name

    @property
    def permits(self) -> int:
        return self._a.permits

    def acquire(self, *, timeout: float | None = None) -> LockGuard:
        return LockGuard(_call(lambda: self._a.acquire(timeout=timeout)))

    def try_acquire(self) -> LockGuard:
        return LockGuard(_call(lambda: self._a.try_acquire()))

    def __enter__(self) -> LockGuard:
        g = self.acquire()
        self._entered.push(g)
        return g

    def __exit__(self, *exc: object) -> None:
        g = self._entered.pop()
        if g is not None:
            g.release()

    def __repr__(self) -> str:
        return f"sync.{self._a!r}"


class RwLock:
    """Shared readers or one writer (etcd's Go ``recipe.RWMutex`` layout);
    ``with rw.read() as guard:``."""

    def __init__(self, native: _native.RwLock) -> None:
        self._a = native

    @property
    def name(self) -> str:
        return self._a.name

    def read(self, *, timeout: float | None = None) -> LockGuard:
        return LockGuard(_call(lambda: self._a.read(timeout=timeout)))

    def write(self, *, timeout: float | None = None) -> LockGuard:
        return LockGuard(_call(lambda: self._a.write(timeout=timeout)))

    def try_read(self) -> LockGuard:
        return LockGuard(_call(lambda: self._a.try_read()))

    def try_write(self) -> LockGuard:
        return LockGuard(_call(lambda: self._a.try_write()))

    def __repr__(self) -> str:
        return f"sync.{self._a!r}"


# ------------------------------------------------------------------------------ election


class Leadership(_Fenced):
    """Leadership of an election: proclaim, resign, guarded writes. ``with`` resigns at the end."""

    def __init__(self, native: _native.Leadership) -> None:
        self._a = native

    @property
    def key(self) -> str:
        return self._a.key  # type: ignore[no-any-return]

    @property
    def name(self) -> str:
        return self._a.name  # type: ignore[no-any-return]

    @property
    def lease_id(self) -> int:
        return self._a.lease_id  # type: ignore[no-any-return]

    @property
    def fencing_token(self) -> int:
        return self._a.fencing_token  # type: ignore[no-any-return]

    @property
    def value(self) -> bytes:
        return self._a.value  # type: ignore[no-any-return]

    @property
    def value_string(self) -> str:
        return self._a.value_string  # type: ignore[no-any-return]

    @property
    def is_leader(self) -> bool:
        return self._a.is_leader  # type: ignore[no-any-return]

    def proclaim(self, value: _Value) -> None:
        _call(lambda: self._a.proclaim(value))

    def resign(self) -> None:
        _call(lambda: self._a.resign())

    def __enter__(self) -> Leadership:
        return self

    def __exit__(self, *exc: object) -> None:
        self.resign()

    def __repr__(self) -> str:
        return f"sync.{self._a!r}"


def _leadership(native: _native.Leadership | None) -> Leadership | None:
    return None if native is None else Leadership(native)


class Election:
    """A leader election (etcd's Go ``concurrency.Election`` layout)."""

    def __init__(self, native: _native.Election) -> None:
        self._a = native

    @property
    def name(self) -> str:
        return self._a.name

    def campaign(self, value: _Value, *, timeout: float | None = None) -> Leadership:
        """Wait until we lead (at most `timeout` s, default: the election's;
        `LockTimeoutError` then); ``with election.campaign(v) as leadership:`` resigns at the end."""
        campaign = self._a.campaign(value, timeout=timeout)

        async def won() -> _native.Leadership:
            return await campaign

        return Leadership(_call(won))

    def leader(self) -> LeaderInfo | None:
        return _call(lambda: self._a.leader())

    def observe(self) -> LeaderObserver:
        return LeaderObserver(self._a.observe())

    def __repr__(self) -> str:
        return f"sync.{self._a!r}"


# ------------------------------------------------------------------------------ leader loop and latch

Work = Callable[[Leadership, threading.Event], None]
"""A leader loop's work: a blocking function, run in a thread of its own each term; return
when `cancelled` is set."""


def _term(work: Work) -> Callable[[_native.Leadership, asyncio.Event], Awaitable[None]]:
    """The asyncio face's work for a blocking `work`: run it in a daemon thread; when the
    asyncio face cancels the term, set the thread's event and wait for the thread."""
    if not callable(work):
        raise TypeError("work must be a function (leadership, cancelled: threading.Event) -> None")

    async def term(leadership: _native.Leadership, _cancelled: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        cancelled = threading.Event()

        def finish(error: BaseException | None) -> None:
            if not done.done():
                if error is None:
                    done.set_result(None)
                else:
                    done.set_exception(error)

        def body() -> None:
            error: BaseException | None = None
            try:
                work(Leadership(leadership), cancelled)
            except BaseException as e:
                error = e
            try:
                loop.call_soon_threadsafe(finish, error)
            except RuntimeError:
                pass  # the loop is gone (interpreter exit)

        threading.Thread(target=body, name="etcd-recipes-leader-work", daemon=True).start()
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            cancelled.set()
            await done  # the work's own error, if it raised one
            raise

    return term


class _Leading:
    """Members that a leader loop and a leader latch share."""

    _a: Any

    @property
    def name(self) -> str:
        return self._a.name  # type: ignore[no-any-return]

    @property
    def is_leader(self) -> bool:
        return self._a.is_leader  # type: ignore[no-any-return]

    @property
    def leadership(self) -> Leadership | None:
        return _leadership(self._a.leadership)

    @property
    def is_closed(self) -> bool:
        return self._a.is_closed  # type: ignore[no-any-return]

    def lost(self, *, timeout: float | None = None) -> str | None:
        """The current (or next) term's end: its loss reason, or None when it ends otherwise."""
        return _call(lambda: self._a.lost(), timeout, "lost()")  # type: ignore[no-any-return]

    def events(self) -> LeaderEvents:
        """Every event from now on (subscribe before starting to see them all)."""
        return LeaderEvents(self._a.events())

    def on_started_leading(self, callback: Callable[[LeaderEvent], object]) -> None:
        cb = _callback(callback)
        _on_loop(lambda: self._a.on_started_leading(cb))

    def on_stopped_leading(self, callback: Callable[[LeaderEvent], object]) -> None:
        cb = _callback(callback)
        _on_loop(lambda: self._a.on_stopped_leading(cb))

    def on_new_leader(self, callback: Callable[[LeaderInfo | None], object]) -> None:
        cb = _callback(callback)
        _on_loop(lambda: self._a.on_new_leader(cb))

    def close(self) -> None:
        """Stop (cancel the work, wait for it at most `stop_timeout`, resign). Idempotent."""
        _call(lambda: self._a.close())

    def __repr__(self) -> str:
        return f"sync.{self._a!r}"


class LeaderLoop(_Leading):
    """Campaign, run the work while leader, resign, campaign again. ``with`` closes it."""

    def __init__(self, native: _native.LeaderLoop) -> None:
        self._a = native

    def start(self, work: Work) -> None:
        """Start in the background (`InvalidArgumentError` if started already)."""
        term = _term(work)
        _on_loop(lambda: self._a.start(term))

    def run(self, work: Work, *, timeout: float | None = None) -> None:
        """Start with `work` and wait until the loop ends; interrupted (Ctrl-C) or after
        `timeout` s (`TimeoutError`), the loop is closed first."""
        self.start(work)
        try:
            self.wait(timeout=timeout)
        except BaseException:
            self.close()
            raise

    def wait(self, *, timeout: float | None = None) -> None:
        """Wait until the loop ends (`ClosedError` when the client was closed)."""
        _call(lambda: self._a.wait(), timeout, "the leader loop")

    def __enter__(self) -> LeaderLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LeaderLatch(_Leading):
    """Campaigns in the background once started; holds leadership until closed.
    ``with latch:`` starts it (if not started) and closes it at the end."""

    def __init__(self, native: _native.LeaderLatch) -> None:
        self._a = native

    def start(self) -> None:
        self._a.start()

    def await_leader(self, *, timeout: float | None = None) -> Leadership:
        """The leadership as soon as we lead; `LockTimeoutError` after `timeout` s."""
        return Leadership(_call(lambda: self._a.await_leader(timeout=timeout)))

    def __enter__(self) -> LeaderLatch:
        try:
            self._a.start()
        except InvalidArgumentError:
            pass  # started already
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------ registry


class Registration:
    """A registered instance, kept alive (and healed) until closed. ``with`` deregisters."""

    def __init__(self, native: _native.Registration) -> None:
        self._a = native

    @property
    def key(self) -> str:
        return self._a.key

    @property
    def instance(self) -> Instance:
        return self._a.instance

    @property
    def lease_id(self) -> int:
        return self._a.lease_id

    @property
    def state(self) -> Literal["registered", "recovering", "lost", "closed"]:
        return self._a.state

    @property
    def readiness(self) -> _Readiness:
        return self._a.readiness

    @property
    def reregistrations(self) -> int:
        return self._a.reregistrations

    def on_state_change(
        self, callback: Callable[[Literal["registered", "recovering", "lost", "closed"]], object]
    ) -> None:
        cb = _callback(callback)
        _on_loop(lambda: self._a.on_state_change(cb))

    def update_metadata(self, metadata: Any) -> None:
        _call(lambda: self._a.update_metadata(metadata))

    def set_readiness(self, readiness: _Readiness) -> None:
        """Change the readiness in place (same key and lease)."""
        _call(lambda: self._a.set_readiness(readiness))

    def close(self) -> None:
        """Deregister (delete the key, revoke the lease). Idempotent."""
        _call(lambda: self._a.close())

    def __enter__(self) -> Registration:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"sync.{self._a!r}"


class ServiceView:
    """A service's live instance set (reads are local). ``for instances in view:``."""

    def __init__(self, native: _native.ServiceView) -> None:
        self._a = native

    @property
    def service(self) -> str:
        return self._a.service

    @property
    def revision(self) -> int:
        return self._a.revision

    def instances(self) -> list[Instance]:
        return self._a.instances()

    def available(self) -> list[Instance]:
        return self._a.available()

    def pick(self, filter: Callable[[Instance], bool] | None = None) -> Instance | None:
        return self._a.pick(filter)

    def pick_round_robin(self) -> Instance | None:
        return self._a.pick_round_robin()

    def pick_random(self) -> Instance | None:
        return self._a.pick_random()

    def note_error(self, instance: Instance | str) -> None:
        self._a.note_error(instance)

    def is_down(self, instance: Instance | str) -> bool:
        return self._a.is_down(instance)

    def changed(self, *, timeout: float | None = None) -> list[Instance]:
        """Wait for the next change; the set then."""
        return _call(lambda: self._a.changed(), timeout, "changed()")

    def events(self) -> InstanceEvents:
        return InstanceEvents(self._a.events())

    def updates(self) -> InstanceSets:
        return InstanceSets(self._a.updates())

    def __iter__(self) -> InstanceSets:
        return self.updates()

    def __len__(self) -> int:
        return len(self._a)

    def close(self) -> None:
        self._a.close()

    def __enter__(self) -> ServiceView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"sync.{self._a!r}"


# ------------------------------------------------------------------------------ config


class ConfigView:
    """A key or a prefix, mirrored locally and kept current by a watch; reads are local."""

    def __init__(self, native: _native.ConfigView) -> None:
        self._a = native
        # The asyncio view's `get` is a C function bound to its mirror dict (dict speed);
        # a Python-level wrapper would halve that. Same arguments, results and errors.
        self.get = native.get  # type: ignore[method-assign]

    @property
    def key(self) -> str:
        return self._a.key

    @property
    def is_prefix(self) -> bool:
        return self._a.is_prefix

    @property
    def revision(self) -> int:
        return self._a.revision

    @overload
    def get(self, key: str | None = None) -> bytes | None: ...
    @overload
    def get(self, key: str | None, default: _D) -> bytes | _D: ...
    def get(self, key: str | None = None, default: Any = None) -> Any:
        return self._a.get(key, default)

    @overload
    def get_string(self, key: str | None = None) -> str | None: ...
    @overload
    def get_string(self, key: str | None, default: _D) -> str | _D: ...
    def get_string(self, key: str | None = None, default: Any = None) -> Any:
        return self._a.get_string(key, default)

    @overload
    def get_json(self, key: str | None = None) -> Any: ...
    @overload
    def get_json(self, key: str | None = None, *, decode: Callable[[Any], T]) -> T | None: ...
    @overload
    def get_json(self, key: str | None = None, *, decode: Callable[[Any], T], default: _D) -> T | _D: ...
    @overload
    def get_json(self, key: str | None = None, *, default: Any) -> Any: ...
    def get_json(self, key: str | None = None, *, decode: Any = None, default: Any = None) -> Any:
        """The value decoded from JSON (then by `decode`: a pydantic model, a dataclass, any
        callable), or `default` when absent; `DecodeError` naming the key otherwise."""
        return self._a.get_json(key, decode=decode, default=default)

    def has(self, key: str) -> bool:
        return self._a.has(key)

    def __contains__(self, key: str) -> bool:
        return key in self._a

    @property
    def size(self) -> int:
        return self._a.size

    def __len__(self) -> int:
        return len(self._a)

    def keys(self) -> list[str]:
        return self._a.keys()

    def snapshot(self) -> ConfigSnapshot:
        """Every key and value, with the `revision` they reflect (read at once)."""
        return self._a.snapshot()

    def changes(self, key: str | None = None, *, prefix: str | None = None) -> ConfigChanges:
        """Every change from now on; `key` for one key's, `prefix` for the keys under it."""
        return ConfigChanges(self._a.changes(key, prefix=prefix))

    def __iter__(self) -> ConfigChanges:
        return self.changes()

    def close(self) -> None:
        self._a.close()

    def __enter__(self) -> ConfigView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"sync.{self._a!r}"


# ------------------------------------------------------------------------------ work queue, counter


class WorkItem:
    """A claimed item: ack() when done, nack() to give it back."""

    def __init__(self, native: _native.WorkItem) -> None:
        self._a = native

    @property
    def id(self) -> str:
        return self._a.id

    @property
    def queue(self) -> str:
        return self._a.queue

    @property
    def key(self) -> str:
        return self._a.key

    @property
    def value(self) -> bytes:
        return self._a.value

    @property
    def value_string(self) -> str:
        return self._a.value_string

    def value_json(self) -> Any:
        return self._a.value_json()

    @property
    def deliveries(self) -> int:
        return self._a.deliveries

    @property
    def fencing_token(self) -> int:
        return self._a.fencing_token

    @property
    def lease_id(self) -> int:
        return self._a.lease_id

    @property
    def is_held(self) -> bool:
        return self._a.is_held

    def ack(self) -> None:
        _call(lambda: self._a.ack())

    def nack(self, *, delay: float | None = None) -> None:
        _call(lambda: self._a.nack(delay=delay))

    def lost(self, *, timeout: float | None = None) -> str | None:
        return _call(lambda: self._a.lost(), timeout, "lost()")

    def on_lost(self, callback: Callable[[str], object]) -> None:
        cb = _callback(callback)
        _on_loop(lambda: self._a.on_lost(cb))

    def __repr__(self) -> str:
        return f"sync.{self._a!r}"


class WorkQueue:
    """A reliable work queue: at-least-once delivery, claims under the consumer's lease."""

    def __init__(self, native: _native.WorkQueue) -> None:
        self._a = native

    @property
    def name(self) -> str:
        return self._a.name

    @property
    def max_deliveries(self) -> int | None:
        return self._a.max_deliveries

    def put(self, value: _Value, *, delay: float | None = None) -> str:
        return _call(lambda: self._a.put(value, delay=delay))

    def receive(self, *, timeout: float | None = None) -> WorkItem:
        """Claim the next item, waiting at most `timeout` s (default: the queue's); `LockTimeoutError` then."""
        return WorkItem(_call(lambda: self._a.receive(timeout=timeout)))

    def try_receive(self) -> WorkItem:
        return WorkItem(_call(lambda: self._a.try_receive()))

    def length(self) -> int:
        return _call(lambda: self._a.length())

    def dead_letters(self) -> list[DeadLetter]:
        return _call(lambda: self._a.dead_letters())

    def requeue_dead(self, id: str) -> bool:
        return _call(lambda: self._a.requeue_dead(id))

    def requeue_all_dead(self) -> int:
        return _call(lambda: self._a.requeue_all_dead())

    def __repr__(self) -> str:
        return f"sync.{self._a!r}"


class Counter:
    """An atomic counter: one key holding a decimal integer, changed by compare-and-swap."""

    def __init__(self, native: _native.Counter) -> None:
        self._a = native

    @property
    def key(self) -> str:
        return self._a.key

    def get(self) -> int:
        return _call(lambda: self._a.get())

    def add(self, delta: int = 1) -> int:
        return _call(lambda: self._a.add(delta))

    def compare_and_set(self, expected: int, new: int) -> bool:
        return _call(lambda: self._a.compare_and_set(expected, new))

    def set(self, value: int) -> int:
        return _call(lambda: self._a.set(value))

    def __repr__(self) -> str:
        return f"sync.{self._a!r}"


# ------------------------------------------------------------------------------ barriers and queues


class Barrier:
    """One key that blocks wait() while it exists (etcd Go recipe.Barrier)."""

    def __init__(self, native: _native.Barrier) -> None:
        self._a = native

    @property
    def name(self) -> str:
        return self._a.name

    @property
    def key(self) -> str:
        return self._a.key

    def hold(self) -> bool:
        return _call(lambda: self._a.hold())

    def release(self) -> bool:
        return _call(lambda: self._a.release())

    def is_held(self) -> bool:
        return _call(lambda: self._a.is_held())

    def wait(self, *, timeout: float | None = None) -> None:
        _call(lambda: self._a.wait(timeout=timeout))

    def __repr__(self) -> str:
        return f"sync.{self._a!r}"


class DoubleBarrier:
    """`count` parties enter together and leave together. ``with`` enters and leaves."""

    def __init__(self, native: _native.DoubleBarrier) -> None:
        self._a = native

    @property
    def name(self) -> str:
        return self._a.name

    @property
    def count(self) -> int:
        return self._a.count

    def enter(self, *, timeout: float | None = None) -> None:
        _call(lambda: self._a.enter(timeout=timeout))

    def leave(self, *, timeout: float | None = None) -> None:
        _call(lambda: self._a.leave(timeout=timeout))

    def lost(self, *, timeout: float | None = None) -> str | None:
        return _call(lambda: self._a.lost(), timeout, "lost()")

    def on_lost(self, callback: Callable[[str], object]) -> None:
        cb = _callback(callback)
        _on_loop(lambda: self._a.on_lost(cb))

    def __enter__(self) -> DoubleBarrier:
        self.enter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.leave()

    def __repr__(self) -> str:
        return f"sync.{self._a!r}"


class Queue:
    """A FIFO queue (etcd Go recipe.Queue); at most once: use WorkQueue for at-least-once."""

    def __init__(self, native: _native.Queue) -> None:
        self._a = native

    @property
    def name(self) -> str:
        return self._a.name

    def enqueue(self, value: _Value) -> str:
        return _call(lambda: self._a.enqueue(value))

    def dequeue(self, *, timeout: float | None = None) -> QueueItem:
        return _call(lambda: self._a.dequeue(timeout=timeout))

    def try_dequeue(self) -> QueueItem | None:
        return _call(lambda: self._a.try_dequeue())

    def length(self) -> int:
        return _call(lambda: self._a.length())

    def __repr__(self) -> str:
        return f"sync.{self._a!r}"


class PriorityQueue:
    """A priority queue (etcd Go recipe.PriorityQueue): lower numbers first, FIFO within one."""

    def __init__(self, native: _native.PriorityQueue) -> None:
        self._a = native

    @property
    def name(self) -> str:
        return self._a.name

    def enqueue(self, value: _Value, priority: int) -> str:
        return _call(lambda: self._a.enqueue(value, priority))

    def dequeue(self, *, timeout: float | None = None) -> QueueItem:
        return _call(lambda: self._a.dequeue(timeout=timeout))

    def try_dequeue(self) -> QueueItem | None:
        return _call(lambda: self._a.try_dequeue())

    def length(self) -> int:
        return _call(lambda: self._a.length())

    def __repr__(self) -> str:
        return f"sync.{self._a!r}"
