"""The shared scenario suite, run against the Python face: every scenario of
``tests/scenarios.json`` (the same file core's and the Node suites run; the language is
described in ``tests/README.md``) is one test case here.

Each op maps to one member of the Python face as ``docs/vocabulary.md`` names it
(snake_case, keyword arguments, durations in seconds). Scenarios share the session's etcd,
each in its own key namespace; one that asks for 3 members gets a cluster of its own.
The runner fails on an op it does not know, and ``test_every_scenario_ran`` fails unless
every scenario of the file ran.

Every scenario runs on both Python faces: ``async`` (``etcd_recipes``) and ``sync``
(``etcd_recipes.sync``, the blocking face). The op table is one: a member is called the
same way on both, and a blocking face's result is simply not awaitable. On the blocking
face each step runs in a thread of its own (so a background step blocks a thread, not the
runner), and iterators are iterated with ``next``. The ``admin`` client and ``task.*``
ops stay on the runner's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import etcd_recipes
from etcd_recipes import sync
from etcd_recipes.testing import EtcdCluster

FILE = Path(__file__).resolve().parents[2] / "tests" / "scenarios.json"
SUITE: dict[str, Any] = json.loads(FILE.read_text(encoding="utf-8"))
SCENARIOS: list[dict[str, Any]] = SUITE["scenarios"]
STEP_TIMEOUT: float = float(SUITE.get("step_timeout", 30))
EXPECTATIONS = {"value", "match", "error", "some", "gt", "ne", "len", "prefix", "ended"}

FACES = ["async", "sync"]
# (face, name) of the scenarios that ran (checked by the last test).
RAN: set[tuple[str, str]] = set()
# The blocking face's steps run here (background steps each hold one thread while they wait).
POOL = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="scenario-step")


# ------------------------------------------------------------------------------ values


@dataclass
class Handle:
    """An object of the face (client, guard, view, ...), with the kind the op table gives it."""

    kind: str
    obj: Any


class _End:
    def __repr__(self) -> str:
        return "<ended>"


END = _End()


class RunnerError(Exception):
    """A problem of the scenario or of this runner: always a failure."""


@dataclass
class Outcome:
    ok: bool
    value: Any = None
    code: str = ""
    message: str = ""


def short(text: str, n: int = 200) -> str:
    return text if len(text) <= n else f"{text[:n]}... ({len(text)} chars)"


def show(v: Any) -> str:
    if isinstance(v, Handle):
        return f"<{v.kind}>"
    if v is END:
        return "<ended>"
    return short(json.dumps(v, ensure_ascii=False))


def describe(o: Outcome) -> str:
    if o.ok:
        return f"ok {show(o.value)}"
    if o.code == "RUNNER":
        return f"runner error: {short(o.message)}"
    return f"error {o.code} ({short(o.message)})"


def raw_bytes(v: Any) -> Any:
    """Bytes as the scenario language writes them: text, or {"hex": ...} when not UTF-8.
    The vocabulary says values are bytes: anything else is a difference."""
    if v is None:
        return None
    if not isinstance(v, (bytes, bytearray, memoryview)):
        raise RunnerError(f"expected bytes from the face, got {type(v).__name__} {short(repr(v))}")
    b = bytes(v)
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": b.hex()}


def instance(i: Any) -> dict[str, Any]:
    return {"id": i.id, "addr": i.addr, "metadata": i.metadata}


def leader(info: Any) -> Any:
    if info is None:
        return None
    return {
        "key": info.key,
        "value": raw_bytes(info.value),
        "fencing_token": info.fencing_token,
        "lease_id": info.lease_id,
    }


def change(c: Any) -> dict[str, Any]:
    return {"key": c.key, "old": raw_bytes(c.old), "new": raw_bytes(c.new), "revision": c.revision}


def queue_item(i: Any) -> Any:
    if i is None:
        return None
    return {"key": i.key, "value": raw_bytes(i.value), "revision": i.revision}


def dead_letter(d: Any) -> dict[str, Any]:
    return {"id": d.id, "value": raw_bytes(d.value), "deliveries": d.deliveries}


def reason(r: Any) -> Any:
    if r is not None and not isinstance(r, str):
        raise RunnerError(f"lost() must give a str or None, got {type(r).__name__}")
    return r


def to_bytes(v: Any) -> bytes | str:
    """A value argument: text as given, {"hex": ...} as bytes."""
    if isinstance(v, dict) and set(v) == {"hex"}:
        return bytes.fromhex(v["hex"])
    if isinstance(v, str):
        return v
    raise RunnerError(f"a value must be text or {{'hex': ...}}, got {short(repr(v))}")


async def settle(x: Any) -> Any:
    """The result of a call that may be awaitable (a face's idiom), awaited."""
    return await x if inspect.isawaitable(x) else x


async def next_of(it: Any) -> Any:
    if not hasattr(it, "__anext__"):  # the blocking face (in a step thread)
        try:
            return next(it)
        except StopIteration:
            return END
    try:
        return await it.__anext__()
    except StopAsyncIteration:
        return END


def kw(a: dict[str, Any], *names: str) -> dict[str, Any]:
    """The keyword arguments among `names` that the step gives."""
    return {n: a[n] for n in names if n in a}


# ------------------------------------------------------------------------------ ops


@dataclass
class Env:
    endpoints: list[str]
    ns: str
    admin: Any = None
    face: str = "async"


Op = Callable[[Env, Any, dict[str, Any]], Awaitable[Any]]


async def _connect(env: Env, _: Any, a: dict[str, Any]) -> Any:
    client: Any = sync.Client if env.face == "sync" else etcd_recipes.Client
    c = await settle(client.connect(env.endpoints, namespace=env.ns + a.get("namespace", ""), connect_timeout=10.0))
    return Handle("client", c)


async def _admin_keys(env: Env, _: Any, a: dict[str, Any]) -> Any:
    view = await env.admin.config(a["prefix"], prefix=True)
    try:
        return sorted(view.keys())
    finally:
        view.close()


async def _task_await(env: Env, t: Any, a: dict[str, Any]) -> Any:
    o: Outcome = await t
    if o.ok:
        return o.value
    if o.code == "RUNNER":
        raise RunnerError(o.message)
    raise _Replay(o)


class _Replay(Exception):
    """The outcome of a background step, given again by task.await."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.message)
        self.outcome = outcome


def _h(kind: str) -> Callable[[Any], Handle]:
    return lambda obj: Handle(kind, obj)


async def _iter(kind: str, x: Any) -> Handle:
    it = await settle(x)
    return Handle(kind, it.__aiter__() if hasattr(it, "__aiter__") else iter(it))


OPS: dict[str, Op] = {
    "client.connect": _connect,
    "client.put": lambda env, c, a: c.put(a["key"], to_bytes(a["value"])),
    "client.get": lambda env, c, a: _map(c.get(a["key"]), raw_bytes),
    "client.delete": lambda env, c, a: c.delete(a["key"]),
    "client.revision": lambda env, c, a: c.revision(),
    "client.is_closed": lambda env, c, a: _value(c.is_closed),
    "client.close": lambda env, c, a: c.close(),
    "client.session": lambda env, c, a: _map(c.session(ttl=a["ttl"]), _h("session")),
    "client.lock": lambda env, c, a: _map(_call(lambda: c.lock(a["name"], **kw(a, "ttl", "timeout"))), _h("lock")),
    "client.election": lambda env, c, a: _map(
        _call(lambda: c.election(a["name"], **kw(a, "ttl", "timeout"))), _h("election")
    ),
    "client.leader": lambda env, c, a: _map(c.leader(a["name"]), leader),
    "client.observe_leader": lambda env, c, a: _iter("observer", _call(lambda: c.observe_leader(a["name"]))),
    "client.register": lambda env, c, a: _map(
        _call(lambda: c.register(a["service"], a["id"], a["addr"], **kw(a, "metadata", "ttl", "readiness", "self_heal"))),
        _h("registration"),
    ),
    "client.list_instances": lambda env, c, a: _map(c.list_instances(a["service"]), lambda l: [instance(i) for i in l]),
    "client.discover": lambda env, c, a: _map(
        _call(
            lambda: c.discover(
                a["service"], **kw(a, "picker", "include_not_ready", "prefer_zone", "down_threshold", "down_period")
            )
        ),
        _h("view"),
    ),
    "client.config": lambda env, c, a: _map(c.config(a["key"], **kw(a, "prefix")), _h("config")),
    "session.lease_id": lambda env, s, a: _value(s.lease_id),
    "session.ttl": lambda env, s, a: _value(s.ttl),
    "session.is_alive": lambda env, s, a: _value(s.is_alive),
    "session.state": lambda env, s, a: _value(s.state),
    "session.lost": lambda env, s, a: _map(s.lost(), reason),
    "session.close": lambda env, s, a: s.close(),
    "session.lock": lambda env, s, a: _map(_call(lambda: s.lock(a["name"], **kw(a, "timeout"))), _h("lock")),
    "session.election": lambda env, s, a: _map(_call(lambda: s.election(a["name"])), _h("election")),
    "session.register": lambda env, s, a: _map(
        _call(lambda: s.register(a["service"], a["id"], a["addr"], **kw(a, "metadata", "readiness", "self_heal"))),
        _h("registration"),
    ),
    "lock.acquire": lambda env, l, a: _map(l.acquire(**kw(a, "timeout")), _h("guard")),
    "lock.try_acquire": lambda env, l, a: _map(l.try_acquire(), _h("guard")),
    "guard.key": lambda env, g, a: _value(g.key),
    "guard.name": lambda env, g, a: _value(g.name),
    "guard.lease_id": lambda env, g, a: _value(g.lease_id),
    "guard.fencing_token": lambda env, g, a: _value(g.fencing_token),
    "guard.is_held": lambda env, g, a: _value(g.is_held),
    "guard.put": lambda env, g, a: g.put(a["key"], to_bytes(a["value"])),
    "guard.delete": lambda env, g, a: g.delete(a["key"]),
    "guard.lost": lambda env, g, a: _map(g.lost(), reason),
    "guard.release": lambda env, g, a: g.release(),
    "election.campaign": lambda env, e, a: _map(
        _call(lambda: e.campaign(to_bytes(a["value"]), **kw(a, "timeout"))), _h("leadership")
    ),
    "election.leader": lambda env, e, a: _map(e.leader(), leader),
    "election.observe": lambda env, e, a: _iter("observer", _call(lambda: e.observe())),
    "leadership.is_leader": lambda env, ld, a: _value(ld.is_leader),
    "leadership.value": lambda env, ld, a: _map(_value(ld.value), raw_bytes),
    "leadership.key": lambda env, ld, a: _value(ld.key),
    "leadership.lease_id": lambda env, ld, a: _value(ld.lease_id),
    "leadership.fencing_token": lambda env, ld, a: _value(ld.fencing_token),
    "leadership.proclaim": lambda env, ld, a: ld.proclaim(to_bytes(a["value"])),
    "leadership.resign": lambda env, ld, a: ld.resign(),
    "leadership.lost": lambda env, ld, a: _map(ld.lost(), reason),
    "observer.next": lambda env, it, a: _map(next_of(it), lambda v: END if v is END else leader(v)),
    "registration.state": lambda env, r, a: _value(r.state),
    "registration.lease_id": lambda env, r, a: _value(r.lease_id),
    "registration.reregistrations": lambda env, r, a: _value(r.reregistrations),
    "registration.update_metadata": lambda env, r, a: r.update_metadata(a["metadata"]),
    "registration.close": lambda env, r, a: r.close(),
    "registration.readiness": lambda env, r, a: _value(r.readiness),
    "registration.set_readiness": lambda env, r, a: _call(lambda: r.set_readiness(a["readiness"])),
    "view.instances": lambda env, v, a: _map(_call(lambda: v.instances()), lambda l: [instance(i) for i in l]),
    "view.updates": lambda env, v, a: _iter("updates", _call(lambda: v.updates())),
    "view.close": lambda env, v, a: _call(lambda: v.close()),
    "view.pick": lambda env, v, a: _map(
        _call(lambda: v.pick((lambda i: i.id not in a["exclude"]) if "exclude" in a else None)),
        lambda i: None if i is None else instance(i),
    ),
    "view.available": lambda env, v, a: _map(_call(lambda: v.available()), lambda l: [instance(i) for i in l]),
    "view.note_error": lambda env, v, a: _call(lambda: v.note_error(a["id"])),
    "view.is_down": lambda env, v, a: _call(lambda: v.is_down(a["id"])),
    "updates.next": lambda env, it, a: _map(next_of(it), lambda v: END if v is END else [instance(i) for i in v]),
    "config.get": lambda env, v, a: _map(_call(lambda: v.get(a["key"])), raw_bytes),
    "config.get_string": lambda env, v, a: _call(lambda: v.get_string(a["key"])),
    "config.get_json": lambda env, v, a: _call(lambda: v.get_json(a["key"])),
    "config.has": lambda env, v, a: _call(lambda: v.has(a["key"])),
    "config.keys": lambda env, v, a: _map(_call(lambda: v.keys()), list),
    "config.changes": lambda env, v, a: _iter("changes", _call(lambda: v.changes())),
    "config.close": lambda env, v, a: _call(lambda: v.close()),
    "changes.next": lambda env, it, a: _map(next_of(it), lambda v: END if v is END else change(v)),
    "client.semaphore": lambda env, c, a: _map(
        _call(lambda: c.semaphore(a["name"], a["permits"], **kw(a, "ttl", "timeout"))), _h("semaphore")
    ),
    "client.rwlock": lambda env, c, a: _map(_call(lambda: c.rwlock(a["name"], **kw(a, "ttl", "timeout"))), _h("rwlock")),
    "client.barrier": lambda env, c, a: _map(_call(lambda: c.barrier(a["name"], **kw(a, "timeout"))), _h("barrier")),
    "client.double_barrier": lambda env, c, a: _map(
        _call(lambda: c.double_barrier(a["name"], a["count"], **kw(a, "ttl", "timeout"))), _h("double_barrier")
    ),
    "client.queue": lambda env, c, a: _map(_call(lambda: c.queue(a["name"], **kw(a, "timeout"))), _h("queue")),
    "client.priority_queue": lambda env, c, a: _map(
        _call(lambda: c.priority_queue(a["name"], **kw(a, "timeout"))), _h("priority_queue")
    ),
    "client.work_queue": lambda env, c, a: _map(
        _call(lambda: c.work_queue(a["name"], **kw(a, "ttl", "max_deliveries", "timeout"))), _h("work_queue")
    ),
    "client.counter": lambda env, c, a: _map(_call(lambda: c.counter(a["key"])), _h("counter")),
    "semaphore.acquire": lambda env, s, a: _map(s.acquire(**kw(a, "timeout")), _h("guard")),
    "semaphore.try_acquire": lambda env, s, a: _map(s.try_acquire(), _h("guard")),
    "rwlock.read": lambda env, rw, a: _map(rw.read(**kw(a, "timeout")), _h("guard")),
    "rwlock.write": lambda env, rw, a: _map(rw.write(**kw(a, "timeout")), _h("guard")),
    "rwlock.try_read": lambda env, rw, a: _map(rw.try_read(), _h("guard")),
    "rwlock.try_write": lambda env, rw, a: _map(rw.try_write(), _h("guard")),
    "barrier.hold": lambda env, b, a: b.hold(),
    "barrier.release": lambda env, b, a: b.release(),
    "barrier.is_held": lambda env, b, a: b.is_held(),
    "barrier.wait": lambda env, b, a: b.wait(**kw(a, "timeout")),
    "double_barrier.enter": lambda env, d, a: d.enter(**kw(a, "timeout")),
    "double_barrier.leave": lambda env, d, a: d.leave(**kw(a, "timeout")),
    "queue.enqueue": lambda env, q, a: q.enqueue(to_bytes(a["value"])),
    "queue.dequeue": lambda env, q, a: _map(q.dequeue(**kw(a, "timeout")), queue_item),
    "queue.try_dequeue": lambda env, q, a: _map(q.try_dequeue(), queue_item),
    "queue.length": lambda env, q, a: q.length(),
    "priority_queue.enqueue": lambda env, q, a: q.enqueue(to_bytes(a["value"]), a["priority"]),
    "priority_queue.dequeue": lambda env, q, a: _map(q.dequeue(**kw(a, "timeout")), queue_item),
    "priority_queue.try_dequeue": lambda env, q, a: _map(q.try_dequeue(), queue_item),
    "priority_queue.length": lambda env, q, a: q.length(),
    "work_queue.put": lambda env, q, a: q.put(to_bytes(a["value"]), **kw(a, "delay")),
    "work_queue.receive": lambda env, q, a: _map(q.receive(**kw(a, "timeout")), _h("work_item")),
    "work_queue.try_receive": lambda env, q, a: _map(q.try_receive(), _h("work_item")),
    "work_queue.length": lambda env, q, a: q.length(),
    "work_queue.dead_letters": lambda env, q, a: _map(q.dead_letters(), lambda l: [dead_letter(d) for d in l]),
    "work_queue.requeue_dead": lambda env, q, a: q.requeue_dead(a["id"]),
    "work_queue.requeue_all_dead": lambda env, q, a: q.requeue_all_dead(),
    "work_item.id": lambda env, i, a: _value(i.id),
    "work_item.value": lambda env, i, a: _map(_value(i.value), raw_bytes),
    "work_item.deliveries": lambda env, i, a: _value(i.deliveries),
    "work_item.fencing_token": lambda env, i, a: _value(i.fencing_token),
    "work_item.lease_id": lambda env, i, a: _value(i.lease_id),
    "work_item.is_held": lambda env, i, a: _value(i.is_held),
    "work_item.ack": lambda env, i, a: i.ack(),
    "work_item.nack": lambda env, i, a: i.nack(**kw(a, "delay")),
    "work_item.lost": lambda env, i, a: _map(i.lost(), reason),
    "counter.get": lambda env, k, a: k.get(),
    "counter.add": lambda env, k, a: k.add(*([a["delta"]] if "delta" in a else [])),
    "counter.compare_and_set": lambda env, k, a: k.compare_and_set(a["expected"], a["new"]),
    "counter.set": lambda env, k, a: k.set(a["value"]),
    "task.await": _task_await,
    "task.done": lambda env, t, a: _value(t.done()),
    "admin.keys": _admin_keys,
    "admin.lease_exists": lambda env, _, a: env.admin.lease_exists(a["lease"]),
    "admin.revoke_lease": lambda env, _, a: env.admin.revoke_lease(a["lease"]),
}


async def _value(v: Any) -> Any:
    return v


async def _call(f: Callable[[], Any]) -> Any:
    """Call `f` (sync or async: either is the face's choice) and settle its result."""
    return await settle(f())


async def _map(x: Any, f: Callable[[Any], Any]) -> Any:
    return f(await settle(x))


# Ops whose result is nothing (whatever the face returns), but for these.
NO_RESULT = (".close", ".release", ".resign", ".proclaim", ".revoke_lease", ".update_metadata", ".set_readiness",
             ".note_error", ".wait", ".enter",
             ".leave", ".ack", ".nack")
HAS_RESULT = {"barrier.release"}


async def execute(env: Env, op: str, subject: Any, args: dict[str, Any]) -> Outcome:
    fn = OPS.get(op)
    if fn is None:
        return Outcome(False, code="RUNNER", message=f"unknown op {op!r}")
    try:
        if env.face == "sync" and not op.startswith(("task.", "admin.")):
            # Blocking calls: in a thread, whose own loop only settles the op's wrappers.
            result = await asyncio.get_running_loop().run_in_executor(
                POOL, lambda: asyncio.run(settle(fn(env, subject, args)))
            )
        else:
            result = await settle(fn(env, subject, args))
        if op.endswith(NO_RESULT) and op not in HAS_RESULT:
            result = None
        return Outcome(True, value=result)
    except _Replay as r:
        return r.outcome
    except etcd_recipes.EtcdRecipesError as e:
        return Outcome(False, code=str(e.code), message=str(e))
    except RunnerError as e:
        return Outcome(False, code="RUNNER", message=str(e))
    except Exception as e:  # a member missing or called differently: a difference from the vocabulary
        return Outcome(False, code="RUNNER", message=f"{type(e).__name__}: {e}")


# ------------------------------------------------------------------------------ expectations


def same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and bool(a == b)


def var_data(vars: dict[str, Any], name: str) -> Any:
    if name not in vars:
        raise RunnerError(f"${name} is not set")
    v = vars[name]
    if isinstance(v, Handle) or v is END:
        raise RunnerError(f"${name} is a {show(v)}, not data")
    return v


def resolve(j: Any, vars: dict[str, Any]) -> Any:
    """Replace "$name" by the variable's value and ${name} inside text by its text."""
    if isinstance(j, str):
        if j.startswith("$") and not j.startswith("${"):
            return var_data(vars, j[1:])
        out, rest = "", j
        while "${" in rest:
            i = rest.index("${")
            end = rest.index("}", i)
            v = var_data(vars, rest[i + 2 : end])
            out += rest[:i] + (v if isinstance(v, str) else json.dumps(v))
            rest = rest[end + 1 :]
        return out + rest
    if isinstance(j, list):
        return [resolve(x, vars) for x in j]
    if isinstance(j, dict):
        return {k: resolve(v, vars) for k, v in j.items()}
    return j


def check(exp: dict[str, Any], o: Outcome) -> str | None:
    """None if `o` meets the expectation, else how it does not."""
    if not o.ok and o.code == "RUNNER":
        return f"runner error: {short(o.message)}"
    if "error" in exp:
        return None if (not o.ok and o.code == exp["error"]) else f"expected error {exp['error']}, got {describe(o)}"
    if not o.ok:
        return f"expected success, got {describe(o)}"
    v = o.value
    if exp.get("ended") is True:
        return None if v is END else f"expected the iterator to have ended, got {describe(o)}"
    if isinstance(v, Handle) or v is END:
        return None if not exp else f"expected data, got {describe(o)}"
    for k, want in exp.items():
        if k == "value":
            ok = same(v, want)
        elif k == "match":
            ok = isinstance(v, dict) and all(same(v.get(f), x) for f, x in want.items())
        elif k == "some":
            ok = (v is not None) == (want is True)
        elif k == "gt":
            ok = isinstance(v, int) and not isinstance(v, bool) and isinstance(want, int) and v > want
        elif k == "ne":
            ok = not same(v, want)
        elif k == "len":
            ok = isinstance(v, list) and len(v) == want
        elif k == "prefix":
            ok = isinstance(v, str) and isinstance(want, str) and v.startswith(want)
        else:
            return f"unknown expectation {k!r}"
        if not ok:
            return f"expected {k} {short(json.dumps(want, ensure_ascii=False))}, got {describe(o)}"
    return None


# ------------------------------------------------------------------------------ running


@dataclass
class Run:
    env: Env
    vars: dict[str, Any] = field(default_factory=dict)
    clients: list[Any] = field(default_factory=list)
    tasks: list[asyncio.Task[Outcome]] = field(default_factory=list)

    def keep(self, name: str | None, v: Any) -> None:
        if isinstance(v, Handle) and v.kind == "client":
            self.clients.append(v.obj)
        if name:
            self.vars[name] = v

    async def step(self, st: dict[str, Any]) -> str | None:
        op: str = st["op"]
        subject: Any = None
        if "on" in st:
            on = st["on"]
            if on not in self.vars:
                return f"${on} is not set"
            h = self.vars[on]
            want = op.split(".")[0]
            if not isinstance(h, Handle) or h.kind != want:
                return f"${on} is {show(h)}, not a {want}"
            subject = h.obj
        try:
            args = resolve(st.get("args", {}), self.vars)
            until = resolve(st["until"], self.vars) if "until" in st else None
            expect = resolve(st.get("expect", {}), self.vars)
        except RunnerError as e:
            return str(e)
        name: str | None = st.get("as")
        loop = asyncio.get_running_loop()

        if st.get("background"):
            t = asyncio.create_task(execute(self.env, op, subject, args))
            self.tasks.append(t)
            self.keep(name, Handle("task", t))
            return None
        if until is not None:
            deadline = loop.time() + STEP_TIMEOUT
            while True:
                try:
                    o = await asyncio.wait_for(execute(self.env, op, subject, args), max(deadline - loop.time(), 0.001))
                except asyncio.TimeoutError:
                    return f"not true within {STEP_TIMEOUT:g} s: {short(json.dumps(st['until']))}"
                if not o.ok and o.code == "RUNNER":
                    return f"runner error: {short(o.message)}"
                why = check(until, o)
                if why is None:
                    if o.ok:
                        self.keep(name, o.value)
                    return None
                if loop.time() >= deadline:
                    return f"not within {STEP_TIMEOUT:g} s: {why}"
                await asyncio.sleep(0.025)
        try:
            o = await asyncio.wait_for(execute(self.env, op, subject, args), STEP_TIMEOUT)
        except asyncio.TimeoutError:
            return f"did not finish within {STEP_TIMEOUT:g} s"
        why = check(expect, o)
        if why is None and o.ok:
            self.keep(name, o.value)
        return why

    async def finish(self) -> None:
        """Close every client of the scenario (ending all it made); stop its background steps."""
        loop = asyncio.get_running_loop()
        for c in [*self.clients, self.env.admin]:
            try:
                if isinstance(c, sync.Client):
                    await asyncio.wait_for(loop.run_in_executor(POOL, c.close), 10.0)
                else:
                    await asyncio.wait_for(c.close(), 10.0)
            except Exception:
                pass
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def run_scenario(index: int, sc: dict[str, Any], endpoints: list[str], face: str = "async") -> str | None:
    ns = f"scn-{index:02}-{uuid.uuid4().hex[:8]}/"
    client: Any = etcd_recipes.Client
    admin = await client.connect(endpoints, namespace=ns, connect_timeout=10.0)
    run = Run(Env(endpoints, ns, admin, face), vars={"ns": ns})
    try:
        for i, st in enumerate(sc["steps"], 1):
            why = await run.step(st)
            if why is not None:
                on = f" on ${st['on']}" if "on" in st else ""
                return f"step {i} ({st['op']}{on}): {why}"
        return None
    finally:
        await run.finish()


def problems_in_file() -> list[str]:
    """The file checked against its own op table and this runner."""
    ops: dict[str, Any] = SUITE["ops"]
    out = [f"op {op!r} of the file is not known to the Python runner" for op in ops if op not in OPS]
    names = [s["name"] for s in SCENARIOS]
    out += [f"scenario name {n!r} is not unique" for n in sorted(set(names)) if names.count(n) > 1]
    for sc in SCENARIOS:
        if sc.get("members", 1) not in (1, 3):
            out.append(f"{sc['name']}: members must be 1 or 3")
        for i, st in enumerate(sc["steps"], 1):
            at = f"{sc['name']}: step {i}"
            op = st.get("op", "")
            if op not in ops:
                out.append(f"{at}: op {op!r} is not in the file's ops table")
                continue
            declared = ops[op]["args"]
            given = st.get("args", {})
            out += [f"{at}: {op} takes no argument {k!r}" for k in given if k not in {d.rstrip("?") for d in declared}]
            out += [f"{at}: {op} needs argument {d!r}" for d in declared if not d.endswith("?") and d not in given]
            needs_subject = not (op == "client.connect" or op.startswith("admin."))
            if needs_subject != ("on" in st):
                out.append(f"{at}: {op} {'needs' if needs_subject else 'takes no'} a subject (\"on\")")
            for f in ("expect", "until"):
                out += [f"{at}: unknown expectation {k!r}" for k in st.get(f, {}) if k not in EXPECTATIONS]
            if st.get("background") and ("as" not in st or "expect" in st or "until" in st):
                out.append(f"{at}: a background step needs \"as\" and takes no expectation")
    return out


def test_scenario_file_is_valid_for_this_runner() -> None:
    problems = problems_in_file()
    assert not problems, f"{len(problems)} problems in {FILE}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["name"] for s in SCENARIOS])
@pytest.mark.parametrize("face", FACES)
async def test_scenario(
    face: str, scenario: dict[str, Any], etcd: EtcdCluster, etcd_factory: Callable[..., EtcdCluster]
) -> None:
    RAN.add((face, scenario["name"]))
    members = scenario.get("members", 1)
    cluster = etcd if members == 1 else etcd_factory(members=members)
    why = await run_scenario(SCENARIOS.index(scenario), scenario, list(cluster.endpoints), face)
    assert why is None, f"{face} face: {scenario['name']}: {why}"


def test_every_scenario_ran() -> None:
    """No silent skips: every scenario of the file ran on each face in this session (pass or fail)."""
    missing = [f"{face}: {s['name']}" for face in FACES for s in SCENARIOS if (face, s["name"]) not in RAN]
    assert not missing, f"{len(missing)} of {len(FACES) * len(SCENARIOS)} scenario runs did not run: {missing[:5]}"
