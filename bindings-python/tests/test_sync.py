"""The blocking face (etcd_recipes.sync): it covers the asyncio face member for member,
releases the GIL while it waits, excludes threads with a lock, gives up with the same
typed errors, is interrupted cleanly by Ctrl-C (no waiter key, no lease left), and runs
leader-loop work and callbacks in threads of its own."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import etcd_recipes
import etcd_recipes._native as native
from etcd_recipes import sync
from etcd_recipes.testing import EtcdCluster

from waiting import EVENTUALLY, summary, tail, wait_until_sync

# The asyncio face's protocol members and their blocking counterparts.
RENAMED = {"__aenter__": "__enter__", "__aexit__": "__exit__", "__aiter__": "__iter__", "__anext__": "__next__",
           "aclose": "close"}
# Asyncio-face classes that have no blocking class: their result is returned at once
# (`campaign()` gives the Leadership, `register()` the Registration), or they are plain
# data shared by both faces, or the test harness.
NO_CLASS = {"Campaign", "Registering", "EtcdCluster", "TestCerts"}
SHARED_DATA = {"LeaderInfo", "LeaderEvent", "Instance", "InstanceEvent", "ConfigChange", "DeadLetter", "QueueItem",
               "EndpointHealth", "Health", "SessionHealth", "ViewHealth", "ComponentHealth", "MetricFamily",
               "MetricSample"}


@pytest.fixture
def sclient(etcd: EtcdCluster, ns: str) -> Iterator[sync.Client]:
    with sync.Client.connect(etcd.endpoints, namespace=ns) as c:
        yield c


@pytest.fixture
def admin(etcd: EtcdCluster, ns: str) -> Iterator[sync.Client]:
    """A second client on the same namespace, for looking at what the first left."""
    with sync.Client.connect(etcd.endpoints, namespace=ns) as c:
        yield c


def keys_under(admin: sync.Client, prefix: str) -> list[str]:
    with admin.config(prefix, prefix=True) as view:
        return sorted(view.keys())


def relative(key: str) -> str:
    """A full key (as a guard gives it) without the test's namespace (as a view lists it)."""
    return key.split("/", 1)[1]


def queued_waiter(admin: sync.Client, prefix: str, holder: str) -> tuple[str, int]:
    """Wait until one waiter is queued behind `holder` (a relative key); its key and lease."""
    found: list[str] = []

    def two() -> bool:
        found[:] = keys_under(admin, prefix)
        return len(found) == 2

    wait_until_sync(two, lambda: f"a waiter queued behind {holder}: {found}")
    key = next(k for k in found if k != holder)
    return key, int(key.rsplit("/", 1)[1], 16)


def test_the_blocking_face_covers_the_asyncio_face() -> None:
    """Every class of the asyncio face has a blocking class (or is shared data), with
    every member; so a member the asyncio face gains fails here until it is covered."""
    missing = []
    for name in dir(native):
        cls = getattr(native, name)
        if name.startswith("_") or not inspect.isclass(cls) or name in NO_CLASS:
            continue
        if issubclass(cls, BaseException) or name in SHARED_DATA:
            if getattr(sync, name, None) is not cls:
                missing.append(f"{name} (the same class)")
            continue
        mine = getattr(sync, name, None)
        if mine is None:
            missing.append(name)
            continue
        for attr in vars(cls):
            if attr.startswith("_") and attr not in RENAMED and attr not in {"__len__", "__contains__"}:
                continue
            if attr == "__await__":
                continue
            if not hasattr(mine, RENAMED.get(attr, attr)):
                missing.append(f"{name}.{RENAMED.get(attr, attr)}")
    assert missing == []
    assert sorted(sync.__all__) == sorted(set(sync.__all__))
    assert all(hasattr(sync, n) for n in sync.__all__)


def test_members_take_the_asyncio_face_arguments() -> None:
    """Each member takes every argument of its asyncio counterpart, by the same name and
    the same way (positional or keyword-only), so code moves between faces unchanged."""
    differences = []
    for name in dir(native):
        cls, mine = getattr(native, name), getattr(sync, name, None)
        if not inspect.isclass(cls) or mine is None or mine is cls or name in NO_CLASS:
            continue
        for attr, member in vars(cls).items():
            theirs = RENAMED.get(attr, attr)
            if (attr.startswith("_") and attr not in RENAMED) or not callable(member) or not hasattr(mine, theirs):
                continue
            try:
                want = inspect.signature(getattr(cls, attr)).parameters
            except (TypeError, ValueError):
                continue  # no text signature (protocol slots)
            have = inspect.signature(getattr(mine, theirs)).parameters
            for p in want.values():
                if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    continue
                q = have.get(p.name)
                keyword_only = p.kind == p.KEYWORD_ONLY
                if q is None or (q.kind == q.KEYWORD_ONLY) != keyword_only:
                    differences.append(f"{name}.{theirs}({p.name})")
    assert differences == []


def test_calls_that_can_wait_take_a_timeout() -> None:
    """Each blocking member whose asyncio counterpart may wait without bound takes `timeout`."""
    waits = {"LockGuard.lost", "Leadership.lost", "Session.lost", "WorkItem.lost", "DoubleBarrier.lost",
             "LeaderLoop.lost", "LeaderLatch.lost", "LeaderLoop.wait", "LeaderLoop.run", "ServiceView.changed",
             "Lock.acquire", "Semaphore.acquire", "RwLock.read", "RwLock.write", "Election.campaign",
             "LeaderLatch.await_leader", "WorkQueue.receive", "Queue.dequeue", "PriorityQueue.dequeue",
             "Barrier.wait", "DoubleBarrier.enter", "DoubleBarrier.leave", "LeaderObserver.next",
             "LeaderEvents.next", "InstanceSets.next", "InstanceEvents.next", "ConfigChanges.next",
             "ConnectionStates.next"}
    without = [w for w in sorted(waits)
               if "timeout" not in inspect.signature(getattr(getattr(sync, w.split(".")[0]), w.split(".")[1])).parameters]
    assert without == []


def test_basic_calls_and_errors(sclient: sync.Client) -> None:
    assert sclient.put("k", "v") > 0
    assert sclient.get("k") == b"v" and sclient.get_string("k") == "v"
    assert sclient.delete("k") == 1 and sclient.get("k") is None
    with pytest.raises(etcd_recipes.InvalidArgumentError) as e:
        sclient.lock("bad/")
    assert e.value.code == "INVALID_ARGUMENT"
    with sclient.session(ttl=5) as s:
        assert s.is_alive and sclient.lease_exists(s.lease_id)
    assert s.state == "closed" and s.lost(timeout=EVENTUALLY) is None


def test_the_gil_is_released_while_a_call_waits(sclient: sync.Client, admin: sync.Client) -> None:
    """A thread waiting for a held lock lets every other thread run: this one computes and
    talks to etcd meanwhile (with the GIL held by the waiter, the loop thread could not
    even queue its key)."""
    holder = sclient.lock("gil", ttl=10).acquire()
    got: list[sync.LockGuard] = []
    waiter = threading.Thread(target=lambda: got.append(sclient.lock("gil", ttl=10).acquire()))
    waiter.start()
    try:
        wait_until_sync(lambda: len(keys_under(admin, "gil/")) == 2, "the waiter's key queued")
        spins = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.2:  # pure Python, needs the GIL
            spins += 1
        assert spins > 1000 and waiter.is_alive() and not got, f"{spins} spins, waiter got {len(got)}"
        assert admin.revision() > 0
    finally:
        holder.release()
        waiter.join(EVENTUALLY)
    assert len(got) == 1 and got[0].is_held
    got[0].release()


@pytest.mark.parametrize("made_from", ["client", "session"])
def test_a_lock_shared_by_threads_excludes_them(sclient: sync.Client, made_from: str) -> None:
    """N threads x M increments of a counter kept in etcd (get, then put: not atomic),
    each under `with lock:` of one shared Lock object: the count is exact."""
    n, m = 4, 8
    session = sclient.session(ttl=10) if made_from == "session" else None
    lock = session.lock("count") if session is not None else sclient.lock("count", ttl=10)
    sclient.put("counter", "0")
    inside = [0]
    overlaps: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(m):
                with lock as guard:
                    inside[0] += 1
                    if inside[0] != 1:
                        overlaps.append(inside[0])
                    v = int(sclient.get_string("counter") or "0")
                    guard.put("counter", str(v + 1))
                    inside[0] -= 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert not errors and not overlaps, f"errors {summary(errors)}; overlaps {summary(overlaps)}"
        assert sclient.get_string("counter") == str(n * m)
    finally:
        if session is not None:
            session.close()


def test_with_is_per_thread(sclient: sync.Client) -> None:
    """Two threads inside `with sem:` of one Semaphore: each leaves with its own permit."""
    sem = sclient.semaphore("two", 2, ttl=10)
    entered = threading.Barrier(2)
    guards: dict[str, sync.LockGuard] = {}

    def party(name: str) -> None:
        with sem as permit:
            guards[name] = permit
            entered.wait(EVENTUALLY)
            if name == "a":
                return  # leaves first; b still holds
            entered.wait(EVENTUALLY)

    a = threading.Thread(target=party, args=("a",))
    b = threading.Thread(target=party, args=("b",))
    a.start()
    b.start()
    a.join(EVENTUALLY)
    assert not guards["a"].is_held and guards["b"].is_held
    entered.wait(EVENTUALLY)
    b.join(EVENTUALLY)
    assert not guards["b"].is_held


def test_timeouts_raise_the_asyncio_face_errors(sclient: sync.Client, admin: sync.Client) -> None:
    """Core's timeouts: LockTimeoutError, as in the asyncio face; the waiter leaves no key."""
    guard = sclient.lock("busy", ttl=10).acquire()
    leadership = sclient.election("e", ttl=10).campaign("me")
    with sclient.semaphore("s", 1, ttl=10).acquire(), sclient.rwlock("rw", ttl=10).write():
        waits: dict[str, Callable[[], object]] = {
            "lock": lambda: sclient.lock("busy", ttl=10).acquire(timeout=0.2),
            "lock default": lambda: sclient.lock("busy", ttl=10, timeout=0.2).acquire(),
            "with lock": lambda: sclient.lock("busy", ttl=10, timeout=0.2).__enter__(),
            "try": lambda: sclient.lock("busy", ttl=10).try_acquire(),
            "semaphore": lambda: sclient.semaphore("s", 1, ttl=10).acquire(timeout=0.2),
            "rwlock": lambda: sclient.rwlock("rw", ttl=10).read(timeout=0.2),
            "campaign": lambda: sclient.election("e", ttl=10).campaign("you", timeout=0.2),
            "latch": lambda: sclient.leader_latch("e", "you", ttl=10).await_leader(timeout=0.2),
            "work queue": lambda: sclient.work_queue("wq", ttl=10).receive(timeout=0.2),
            "queue": lambda: sclient.queue("q").dequeue(timeout=0.2),
            "priority queue": lambda: sclient.priority_queue("pq").dequeue(timeout=0.2),
            "double barrier": lambda: sclient.double_barrier("db", 2, ttl=10).enter(timeout=0.2),
        }
        sclient.barrier("b").hold()
        waits["barrier"] = lambda: sclient.barrier("b").wait(timeout=0.2)
        wrong = {}
        for what, call in waits.items():
            try:
                call()
                wrong[what] = "returned"
            except etcd_recipes.LockTimeoutError as e:
                if e.code != "LOCK_TIMEOUT":
                    wrong[what] = e.code
            except BaseException as e:  # noqa: BLE001 - reported below
                wrong[what] = f"{type(e).__name__}: {e}"
        assert wrong == {}
    # Our own timeouts, where the asyncio face has none: the builtin TimeoutError.
    local: dict[str, Callable[[], object]] = {
        "guard.lost": lambda: guard.lost(timeout=0.1),
        "leadership.lost": lambda: leadership.lost(timeout=0.1),
        "observe.next": lambda: _second(sclient.observe_leader("e"), timeout=0.1),
        "view.changed": lambda: sclient.discover("svc").changed(timeout=0.1),
        "loop.wait": lambda: sclient.leader_loop("idle", "x", ttl=10).wait(timeout=0.1),
    }
    wrong = {}
    for what, call in local.items():
        try:
            call()
            wrong[what] = "returned"
        except etcd_recipes.EtcdRecipesError as e:
            wrong[what] = f"{type(e).__name__}: {e}"
        except TimeoutError:
            pass
    assert wrong == {}
    guard.release()
    leadership.resign()
    left = {p: keys_under(admin, p) for p in ["busy/", "e/", "s/", "rw/", "db/"]}
    assert left == {"busy/": [], "e/": [], "s/": [], "rw/": [], "db/": []}


def _second(observer: sync.LeaderObserver, timeout: float) -> object:
    with observer:
        observer.next(timeout=EVENTUALLY)  # the current leader
        return observer.next(timeout=timeout)


def test_iterators_and_views(sclient: sync.Client) -> None:
    with sclient.config("cfg/", prefix=True) as view, view.changes() as changes:
        sclient.put("cfg/a", "1")
        c = next(changes)
        assert (c.key, c.new, view.get("cfg/a")) == ("cfg/a", b"1", b"1") and "cfg/a" in view
    assert next(iter(changes), None) is None  # closed: the iteration ended
    with sclient.discover("svc") as services, sclient.register("svc", "i-1", "10.0.0.1:80", ttl=10) as reg:
        sets = iter(services)
        wait_until_sync(lambda: [i.id for i in next(sets)] == ["i-1"], "i-1 in the view")
        assert len(services) == 1 and reg.state == "registered"
    after: str = reg.state
    assert after == "closed"
    with sclient.election("who", ttl=10).campaign("me") as leadership:
        observed = [x.value if x else None for x in _take(sclient.observe_leader("who"), 1)]
        assert observed == [b"me"] and leadership.is_leader
    assert not leadership.is_leader


def test_config_reads_and_connection_state(sclient: sync.Client) -> None:
    sclient.put("c/a", "1")
    sclient.put("c/j", '{"n": 2}')
    with sclient.config("c/", prefix=True) as view, view.changes("c/a") as only_a, \
            view.changes(prefix="c/x") as under_x:
        assert (len(view), view.get("c/zz", b"none"), view.get_string("c/zz", "none")) == (2, b"none", "none")
        assert view.get_json("c/j", decode=lambda d: d["n"]) == 2 and view.get_json("c/zz", default=0) == 0
        snap = view.snapshot()
        assert isinstance(snap, sync.ConfigSnapshot) and snap.revision == view.revision and snap["c/a"] == b"1"
        sclient.put("c/j", "{}")
        sclient.put("c/x/1", "x")
        sclient.put("c/a", "2")
        assert (only_a.next(timeout=EVENTUALLY).new, under_x.next(timeout=EVENTUALLY).key) == (b"2", "c/x/1")
    with sclient.connection_states() as states:
        assert next(states) == sclient.connection_state == "CONNECTED"
    health = sclient.endpoint_health()
    assert [h.endpoint for h in health] == sclient.endpoints and all(h.serving for h in health)


def _take(it: Iterator[Any], n: int) -> list[Any]:
    out = [next(it) for _ in range(n)]
    getattr(it, "close")()
    return out


def test_leader_loop_work_runs_in_a_thread_and_is_cancelled_by_an_event(sclient: sync.Client) -> None:
    started = threading.Event()
    seen: dict[str, Any] = {}
    events: list[str] = []
    callback_threads: set[str] = set()

    def work(leadership: sync.Leadership, cancelled: threading.Event) -> None:
        seen["thread"] = threading.current_thread().name
        seen["token"] = leadership.fencing_token
        leadership.put("work/owner", "me")  # a blocking call from the work thread
        started.set()
        seen["set"] = cancelled.wait(EVENTUALLY)

    def on_started(ev: sync.LeaderEvent) -> None:
        callback_threads.add(threading.current_thread().name)
        events.append(ev.kind)

    lp = sclient.leader_loop("jobs", "me", ttl=10, stop_timeout=EVENTUALLY)
    lp.on_started_leading(on_started)
    lp.on_stopped_leading(lambda ev: events.append(f"{ev.kind}:{ev.reason}"))
    with lp:
        lp.start(work)
        assert started.wait(EVENTUALLY) and lp.is_leader
        leadership = lp.leadership
        assert leadership is not None and leadership.fencing_token == seen["token"]
    assert seen["set"] is True and seen["thread"] == "etcd-recipes-leader-work"
    assert lp.is_closed and sclient.get_string("work/owner") == "me"
    wait_until_sync(lambda: events == ["started_leading", "stopped_leading:cancelled"], lambda: f"events {events}")
    assert callback_threads == {"etcd-recipes-callbacks"}


def test_leader_loop_work_sees_a_loss(sclient: sync.Client, admin: sync.Client) -> None:
    """The lease revoked from outside: the work's event is set, the loop campaigns again."""
    terms: list[int] = []
    ended: list[bool] = []
    lease: list[int] = []

    def work(leadership: sync.Leadership, cancelled: threading.Event) -> None:
        terms.append(leadership.fencing_token)
        lease.append(leadership.lease_id)
        ended.append(cancelled.wait(EVENTUALLY))

    lp = sclient.leader_loop("lossy", "me", ttl=10)
    with lp:
        lp.start(work)
        wait_until_sync(lambda: len(lease) == 1, "the first term")
        admin.revoke_lease(lease[0])
        wait_until_sync(lambda: len(terms) == 2, lambda: f"terms {terms}")
        assert ended[0] is True and terms[1] > terms[0]
    assert ended == [True, True]


def test_leader_loop_run_returns_when_the_work_returns(sclient: sync.Client) -> None:
    ran = []
    lp = sclient.leader_loop("once", "me", ttl=10, requeue=False)
    lp.run(lambda leadership, cancelled: ran.append(leadership.is_leader), timeout=EVENTUALLY)
    assert ran == [True] and lp.is_closed


def test_on_lost_runs_on_the_callback_thread_and_may_block(sclient: sync.Client, admin: sync.Client) -> None:
    guard = sclient.lock("cb", ttl=10).acquire()
    got: list[tuple[str, str, bool]] = []

    def lost(reason: str) -> None:
        # A blocking call from a callback works: it does not run on the loop thread.
        got.append((threading.current_thread().name, reason, sclient.lease_exists(guard.lease_id)))

    guard.on_lost(lost)
    admin.revoke_lease(guard.lease_id)
    wait_until_sync(lambda: len(got) == 1, "on_lost called")
    assert got[0][0] == "etcd-recipes-callbacks" and got[0][2] is False


def test_a_blocking_call_on_the_loop_thread_is_refused(sclient: sync.Client) -> None:
    errors: list[str] = []

    async def inside() -> None:
        try:
            sclient.revision()
        except RuntimeError as e:
            errors.append(str(e))

    loop = sync._Loop.get()
    import asyncio

    asyncio.run_coroutine_threadsafe(inside(), loop).result(EVENTUALLY)
    assert len(errors) == 1 and "never return" in errors[0]


def test_keyboard_interrupt_in_this_process_cancels_the_wait(sclient: sync.Client, admin: sync.Client) -> None:
    """SIGINT sent to the process (the OS may hand it to any thread) while the main thread
    waits: KeyboardInterrupt within a slice, the waiter's key and session are gone soon after."""
    assert threading.current_thread() is threading.main_thread()
    guard = sclient.lock("intr", ttl=10).acquire()
    waiter: list[tuple[str, int]] = []

    def interrupt() -> None:
        waiter.append(queued_waiter(admin, "intr/", relative(guard.key)))
        os.kill(os.getpid(), signal.SIGINT)

    t = threading.Thread(target=interrupt)
    t.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        sclient.lock("intr", ttl=10).acquire()
    t.join()
    took = wait_until_sync(lambda: keys_under(admin, "intr/") == [relative(guard.key)], "the waiter's key deleted")
    lease = waiter[0][1]
    wait_until_sync(lambda: not admin.lease_exists(lease), "the waiter's session revoked")
    assert took < 5, f"the waiter's key went {took:.2f} s after the interrupt ({time.monotonic() - t0:.2f} s in all)"
    guard.release()


CTRL_C = """
import sys, etcd_recipes
from etcd_recipes import sync

MODE, NS, *ENDPOINTS = sys.argv[1:]
client = sync.Client.connect(ENDPOINTS, namespace=NS)
print("waiting", flush=True)
if MODE == "uncaught":
    client.lock("ctrlc", ttl=30).acquire()     # until SIGINT
try:
    client.lock("ctrlc", ttl=30).acquire()
except KeyboardInterrupt:
    print("interrupted", flush=True)
sys.stdin.readline()                            # the test has looked; now exit
print("bye", flush=True)
"""


@pytest.mark.parametrize("mode", ["uncaught", "caught"])
def test_ctrl_c_interrupts_a_waiting_acquire(etcd: EtcdCluster, sclient: sync.Client, admin: sync.Client, ns: str,
                                            mode: str) -> None:
    """A child waits for a held lock; SIGINT: `uncaught`, it ends with KeyboardInterrupt;
    `caught`, it lives on. Either way no waiter key and no lease of the waiter is left, and
    in the `caught` case that is so while the process still runs (not the exit's doing)."""
    guard = sclient.lock("ctrlc", ttl=10).acquire()
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(CTRL_C), mode, ns, *etcd.endpoints],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdin is not None
        assert p.stdout.readline() == "waiting\n"
        _, lease = queued_waiter(admin, "ctrlc/", relative(guard.key))
        assert admin.lease_exists(lease)
        p.send_signal(signal.SIGINT)
        if mode == "caught":
            assert p.stdout.readline() == "interrupted\n"
            wait_until_sync(lambda: keys_under(admin, "ctrlc/") == [relative(guard.key)], "the waiter's key deleted")
            wait_until_sync(lambda: not admin.lease_exists(lease), "the waiter's session revoked")
            assert p.poll() is None, "the child must still run"
            p.stdin.write("go\n")
            p.stdin.flush()
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    if mode == "uncaught":
        assert p.returncode in (-signal.SIGINT, 128 + signal.SIGINT), f"rc={p.returncode}\n{tail(err, 800)}"
        assert "KeyboardInterrupt" in err, tail(err, 800)
    else:
        assert p.returncode == 0 and out.endswith("bye\n"), f"rc={p.returncode}\n{tail(out)}\n{tail(err, 800)}"
    assert "panicked" not in err and "Fatal" not in err, tail(err, 800)
    assert keys_under(admin, "ctrlc/") == [relative(guard.key)]
    assert not admin.lease_exists(lease)
    assert guard.is_held
    guard.release()


def test_one_client_many_threads_many_recipes(sclient: sync.Client) -> None:
    """Threads share one client for different recipes at once (counter, queue, work queue)."""
    q = sclient.work_queue("jobs", ttl=10)
    for i in range(20):
        q.put(f"job-{i}")
    done: list[str] = []
    lock = threading.Lock()

    def consumer() -> None:
        while True:
            try:
                item = q.try_receive()
            except etcd_recipes.LockTimeoutError:
                return
            sclient.counter("handled").add()
            with lock:
                done.append(item.value_string)
            item.ack()

    threads = [threading.Thread(target=consumer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(done) == sorted(f"job-{i}" for i in range(20)), summary(sorted(done))
    assert sclient.counter("handled").get() == 20 and q.length() == 0

