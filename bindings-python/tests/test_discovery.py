"""Registration on a session, readiness, in-place updates, pickers and the down-instance
policy, from Python, against a real etcd."""

from __future__ import annotations

import asyncio
import math
from collections import Counter

import pytest

from etcd_recipes import Client, EtcdRecipesError, Instance, InvalidArgumentError, ServiceView
from waiting import EVENTUALLY, wait_until


async def has_ids(view: ServiceView, ids: list[str]) -> None:
    await wait_until(lambda: [i.id for i in view.instances()] == ids, lambda: f"view holds {ids}, has {view.instances()}")


async def test_round_robin_sticky_zone_and_filter(client: Client) -> None:
    regs = [
        await client.register("svc", "a", "a:1", metadata={"zone": "eu"}),
        await client.register("svc", "b", "b:1", metadata={"zone": "us"}),
        await client.register("svc", "c", "c:1", metadata={"zone": "us"}),
    ]
    rr = await client.discover("svc")
    sticky = await client.discover("svc", picker="sticky")
    zoned = await client.discover("svc", prefer_zone="eu")
    await has_ids(rr, ["a", "b", "c"])
    assert [rr.pick().id for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]  # type: ignore[union-attr]
    picked = rr.pick(lambda i: i.metadata["zone"] == "us")
    assert picked is not None and picked.id in ("b", "c")
    assert rr.pick(lambda i: False) is None

    def boom(i: Instance) -> bool:
        raise RuntimeError("filter failed")

    with pytest.raises(RuntimeError, match="filter failed"):
        rr.pick(boom)

    first = sticky.pick()
    assert first is not None and first.id == "a"
    assert {sticky.pick().id for _ in range(20)} == {"a"}  # type: ignore[union-attr]
    assert {zoned.pick().id for _ in range(5)} == {"a"}  # type: ignore[union-attr]
    await regs[0].close()
    await has_ids(sticky, ["b", "c"])
    await has_ids(zoned, ["b", "c"])
    second = sticky.pick()
    assert second is not None and second.id != "a"
    assert {sticky.pick().id for _ in range(20)} == {second.id}, "sticky holds its new choice"  # type: ignore[union-attr]
    assert zoned.pick() is not None, "the local zone emptied: any zone"


async def test_weighted_picks_follow_the_weights(client: Client) -> None:
    regs = [await client.register("svc", i, f"{i}:1", metadata={"weight": w}) for i, w in [("w1", 1), ("w3", 3), ("w0", 0)]]
    view = await client.discover("svc", picker="weighted")
    await has_ids(view, ["w0", "w1", "w3"])
    n = 20_000
    counts = Counter(view.pick().id for _ in range(n))  # type: ignore[union-attr]
    assert counts["w0"] == 0, counts
    for id_, share in [("w1", 0.25), ("w3", 0.75)]:
        tol = 5 * math.sqrt(n * share * (1 - share))  # 5 standard deviations of a binomial count
        assert abs(counts[id_] - n * share) <= tol, f"{id_}: {counts[id_]} of {n}, expected {n * share} ± {tol:.0f}"
    assert len(regs) == 3  # the registrations live until here


async def test_note_error_skips_an_instance_until_the_period_passes(client: Client) -> None:
    regs = [await client.register("svc", "a", "a:1"), await client.register("svc", "b", "b:1")]
    view = await client.discover("svc", down_threshold=2, down_period=0.4)
    await has_ids(view, ["a", "b"])
    a = next(i for i in view.instances() if i.id == "a")
    view.note_error(a)
    assert not view.is_down("a")
    view.note_error("a")
    assert view.is_down(a)
    assert [i.id for i in view.available()] == ["b"]
    assert {view.pick().id for _ in range(6)} == {"b"}  # type: ignore[union-attr]
    await wait_until(lambda: not view.is_down("a"), "a back after down_period")
    assert [i.id for i in view.available()] == ["a", "b"]
    assert len(regs) == 2  # the registrations live until here


async def test_draining_is_honoured_and_updates_are_in_place(client: Client) -> None:
    reg = await client.register("svc", "a", "a:1", metadata={"v": 1})
    other = await client.register("svc", "b", "b:1", readiness="not_ready")
    view = await client.discover("svc")
    everyone = await client.discover("svc", include_not_ready=True)
    await has_ids(view, ["a", "b"])
    assert [i.id for i in view.available()] == ["a"]
    assert [i.readiness for i in view.instances()] == ["ready", "not_ready"]
    events = view.events()
    lease = reg.lease_id
    await reg.set_readiness("draining")
    ev = await asyncio.wait_for(events.__anext__(), EVENTUALLY)
    assert ev.kind == "updated" and ev.instance is not None and ev.instance.readiness == "draining"
    assert reg.readiness == "draining"
    assert view.pick() is None
    await wait_until(lambda: len(everyone.available()) == 2, "include_not_ready sees both")
    raw = await client.get_string("svc/a")
    assert raw == '{"Op":0,"Addr":"a:1","Metadata":{"readiness":"draining","v":1}}'
    await reg.update_metadata({"v": 2})
    ev = await asyncio.wait_for(events.__anext__(), EVENTUALLY)
    assert ev.kind == "updated" and ev.instance is not None
    assert ev.instance.metadata == {"v": 2, "readiness": "draining"}, "readiness kept"
    assert reg.lease_id == lease and reg.reregistrations == 0, "in place: same key, same lease"
    assert [i.id for i in view.instances()] == ["a", "b"]
    with pytest.raises(InvalidArgumentError):
        await reg.set_readiness("asleep")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        await reg.update_metadata({"weight": -2})
    await other.close()


async def test_registration_on_a_session_is_lost_with_it(client: Client) -> None:
    session = await client.session(ttl=10)
    reg = await session.register("svc", "a", "a:1")
    assert reg.lease_id == session.lease_id
    view = await client.discover("svc")
    await has_ids(view, ["a"])
    states: list[str] = []
    reg.on_state_change(states.append)
    await client.revoke_lease(session.lease_id)
    await has_ids(view, [])
    await wait_until(lambda: reg.state == "lost", lambda: f"registration lost (state {reg.state})")
    await wait_until(lambda: "lost" in states, lambda: f"on_state_change saw lost ({states})")
    assert reg.reregistrations == 0
    with pytest.raises(EtcdRecipesError) as e:
        await reg.update_metadata({"v": 2})
    assert e.value.code == "SESSION_LOST"


async def test_without_self_heal_a_revoked_registration_stays_gone(client: Client) -> None:
    async with client.register("svc", "a", "a:1", self_heal=False) as reg:
        await client.revoke_lease(reg.lease_id)
        await wait_until(lambda: reg.state == "lost", lambda: f"registration lost (state {reg.state})")
        assert await client.list_instances("svc") == []
        assert reg.reregistrations == 0


async def test_bad_input_is_invalid_argument(client: Client) -> None:
    with pytest.raises(InvalidArgumentError):
        await client.discover("svc", picker="fastest")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        await client.discover("svc", down_threshold=0)
    with pytest.raises(InvalidArgumentError):
        await client.discover("svc", down_threshold=-1)
    with pytest.raises(InvalidArgumentError):
        await client.discover("svc", down_period=0)
    with pytest.raises(InvalidArgumentError):
        await client.register("svc", "a", "a:1", readiness="asleep")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        await client.register("svc", "a", "a:1", metadata={"weight": -1})
    view = await client.discover("svc")
    with pytest.raises(TypeError):
        view.note_error(42)  # type: ignore[arg-type]
