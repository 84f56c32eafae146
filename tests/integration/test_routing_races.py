"""Routing's handlers when their guard loses a race, on the real MongoDB-wire server.

The use cases run in-process against the real database (no Kafka: the outbox relay is never started);
a competing write is injected between a handler's read and its guarded write, exactly where another
replica or an HTTP action would land. A handler that loses must say so (RetryLater: the consumer runtime
runs it again, and it decides again on what is there now), never return as if it had applied.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from harness import Infra, mongo, unique

from aftersales.routing.app import Settings
from aftersales.routing.domain import ServiceGrid, Status, Technician
from aftersales.routing.metrics import POOL_FALLBACKS_REARMED as POOL_REARMED
from aftersales.routing.metrics import SLA_TIMERS_REARMED as REARMED
from aftersales.routing.pool import fallback_timer_id
from aftersales.routing.service import RoutingService
from aftersales.routing.sla import SlaPolicy, default_policy
from aftersales.routing.store import INDEXES, OUTBOX_COLLECTIONS, RoutingStore, grid_of
from aftersales.shared.errors import RetryLater
from aftersales.shared.failures import note_failure
from aftersales.shared.mongo import DB_COMMANDS, ensure_indexes
from aftersales.shared.runtime import RuntimeSpec, ServiceRuntime
from aftersales.shared.timers import TIMER_INDEXES, Timer

ALWAYS = {str(d): [{"start": "00:00", "end": "24:00"}] for d in range(7)}
REGION = "310000/310100/310104"


@pytest.fixture
async def routing(infra: Infra) -> AsyncIterator[RoutingService]:
    database = unique("races_")
    settings = Settings(
        mongodb_uri=infra.mongodb_uri,  # type: ignore[arg-type]
        mongodb_database=database,
        kafka_bootstrap_servers=infra.kafka,
    )
    runtime = ServiceRuntime(settings, RuntimeSpec(outbox_collections=OUTBOX_COLLECTIONS, indexes=INDEXES))
    await ensure_indexes(runtime.db, [*INDEXES, *TIMER_INDEXES])
    service = RoutingService(RoutingStore(runtime.db, runtime.relay.notify), runtime.timers)
    grid = ServiceGrid.model_validate(
        {
            "id": "g1",
            "name": "g1",
            "region_path": REGION.split("/"),
            "calendar": {"timezone": "UTC", "weekly": ALWAYS},
            "supervisor_id": "sup-1",
            "surge": {"backlog_threshold": 1000, "capacity_factor": 1.5, "automatic": False},
        }
    )
    await service.store.put_grid(grid)
    await add_technician(service, "t1", tier=1)
    yield service
    client = mongo(infra)
    await client.drop_database(database)
    await client.close()
    await runtime.client.close()


async def add_technician(service: RoutingService, tech_id: str, *, tier: int) -> None:
    tech = {"id": tech_id, "name": tech_id, "grid_id": "g1", "tier": tier, "capacity": 5}
    await service.store.put_technician(Technician.model_validate(tech))


async def dispatch(
    service: RoutingService, ticket_id: str, status: Status = Status.ASSIGNED
) -> dict[str, Any]:
    facts = {
        "ticket_id": ticket_id,
        "channel": "web",
        "category": "hardware_fault",
        "priority": "P3",
        "customer_id": "C-1",
        "customer_tier": "standard",
        "region_code": REGION,
        "device_type": "air_conditioner",
    }
    await service.dispatch.dispatch_round(
        facts=facts, started_at=datetime.now(UTC), round_=1, previous_technician_id=None
    )
    wo = await service.store.work_order(ticket_id)
    assert wo is not None and wo["status"] == status
    return wo


async def held_slots(service: RoutingService) -> dict[str, int]:
    return {d["_id"]: d["active_work_orders"] for d in await service.store.technician_docs()}


def race_once(service: RoutingService, competing: dict[str, Any]) -> None:
    """Make the next guarded work-order write lose: another writer changes the work order just before."""
    store = service.store
    original = store.update_work_order

    async def losing(ticket_id: str, guard: Any, update: Any, events: Any) -> bool:
        store.update_work_order = original  # type: ignore[method-assign]
        await store.work_orders.update_one({"_id": ticket_id}, {"$set": competing})
        return await original(ticket_id, guard, update, events)

    store.update_work_order = losing  # type: ignore[method-assign]


async def test_a_cancellation_racing_an_accept_is_decided_again_and_frees_the_slot(
    routing: RoutingService,
) -> None:
    wo = await dispatch(routing, "R-cancel")
    assert sum((await held_slots(routing)).values()) == 1
    race_once(routing, {"status": Status.ACCEPTED.value})  # the technician accepts meanwhile
    with pytest.raises(RetryLater):
        await routing.work_orders.ended(wo["_id"], Status.CANCELLED)
    await routing.work_orders.ended(wo["_id"], Status.CANCELLED)  # the consumer runs it again
    after = await routing.store.work_order(wo["_id"])
    assert after is not None and after["status"] == Status.CANCELLED
    assert sum((await held_slots(routing)).values()) == 0


async def test_a_lost_customer_reply_is_retried_and_the_sla_timer_survives(routing: RoutingService) -> None:
    wo = await dispatch(routing, "R-reply")
    await routing.store.work_orders.update_one(
        {"_id": wo["_id"]},
        {"$set": {"status": Status.PENDING_CUSTOMER.value, "paused_since": datetime.now(UTC)}},
    )
    paused = await routing.store.work_order(wo["_id"])
    assert paused is not None
    armed = {c: s.get("timer_id") for c, s in paused["sla"].items() if s.get("timer_id")}
    assert armed, "dispatch arms an SLA timer"
    # The technician starts work meanwhile (his own action ends the pause).
    race_once(routing, {"status": Status.IN_PROGRESS.value, "paused_since": None})
    with pytest.raises(RetryLater):
        await routing.work_orders.customer_replied(wo["_id"])
    # The lost re-plan cancelled nothing: the timer the work order points at still exists.
    after = await routing.store.work_order(wo["_id"])
    assert after is not None
    for clock, timer_id in armed.items():
        assert after["sla"][clock]["timer_id"] == timer_id
        assert await routing.timers.get(timer_id) is not None
    await routing.work_orders.customer_replied(wo["_id"])  # run again: nothing to resume any more
    assert (await routing.store.work_order(wo["_id"]))["status"] == Status.IN_PROGRESS  # type: ignore[index]


async def test_a_priority_change_racing_a_fired_threshold_decides_again_and_keeps_the_threshold(
    routing: RoutingService,
) -> None:
    """A threshold fired between the priority change's read and its write (same generation, its timer
    moved on): the re-plan must not write over it, or the threshold would be planned, and fire, again."""
    wo = await dispatch(routing, "R-priority")
    state = wo["sla"]["first_response"]
    recorded = {  # what recording the 50 % threshold writes: the fired list, the next threshold's timer
        "sla.first_response.fired": [50],
        "sla.first_response.next_pct": 75,
        "sla.first_response.timer_id": f"{state['timer_id']}-next",
    }
    race_once(routing, recorded)
    with pytest.raises(RetryLater):
        await routing.work_orders.priority_changed(wo["_id"], "P1")
    await routing.work_orders.priority_changed(wo["_id"], "P1")  # the consumer runs it again
    after = await routing.store.work_order(wo["_id"])
    assert after is not None and after["facts"]["priority"] == "P1"
    assert after["sla"]["first_response"]["fired"] == [50]  # the fired threshold stays fired
    assert after["sla"]["first_response"]["next_pct"] == 75


async def test_a_policy_change_racing_a_fired_threshold_re_plans_on_the_new_policy_all_the_same(
    routing: RoutingService,
) -> None:
    wo = await dispatch(routing, "R-policy")
    state = wo["sla"]["first_response"]
    race_once(
        routing,
        {
            "sla.first_response.fired": [50],
            "sla.first_response.next_pct": 75,
            "sla.first_response.timer_id": f"{state['timer_id']}-next",
        },
    )
    tighter = SlaPolicy(
        targets=[
            t.model_copy(update={"first_response_minutes": 7.0, "resolution_minutes": 70.0})
            for t in default_policy().targets
        ]
    )
    assert await routing.clocks.replan_open(policy=tighter) == 1  # lost once, read again, re-planned
    after = await routing.store.work_order(wo["_id"])
    assert after is not None
    assert after["sla"]["first_response"]["target_minutes"] == 7.0
    assert after["sla"]["resolution"]["target_minutes"] == 70.0
    assert after["sla"]["first_response"]["fired"] == [50]  # and the threshold fired meanwhile stays


async def test_a_resume_that_lands_retires_the_old_timer_generation(routing: RoutingService) -> None:
    wo = await dispatch(routing, "R-resume")
    await routing.store.work_orders.update_one(
        {"_id": wo["_id"]},
        {"$set": {"status": Status.PENDING_CUSTOMER.value, "paused_since": datetime.now(UTC)}},
    )
    paused = await routing.store.work_order(wo["_id"])
    assert paused is not None
    armed = {c: s["timer_id"] for c, s in paused["sla"].items() if s.get("timer_id")}
    await routing.work_orders.customer_replied(wo["_id"])
    resumed = await routing.store.work_order(wo["_id"])
    assert resumed is not None and resumed["status"] == Status.IN_PROGRESS
    for clock, old in armed.items():
        new = resumed["sla"][clock]["timer_id"]
        assert new != old and await routing.timers.get(new) is not None
        assert await routing.timers.get(old) is None


async def test_a_breach_whose_escalation_loses_a_race_escalates_when_the_timer_runs_again(
    routing: RoutingService,
) -> None:
    wo = await dispatch(routing, "R-breach")
    state = wo["sla"]["first_response"]
    # Make the first-response clock due for its breach now.
    await routing.store.work_orders.update_one(
        {"_id": wo["_id"]}, {"$set": {"sla.first_response.next_pct": 100}}
    )
    payload = {
        "ticket_id": wo["_id"],
        "round": 1,
        "clock": "first_response",
        "pct": 100,
        "generation": state["generation"],
    }
    timer = Timer(
        id="breach-1",
        kind="sla",
        due_at=datetime.now(UTC) - timedelta(seconds=1),
        payload=payload,
        group=wo["_id"],
        attempts=1,
    )
    await add_technician(routing, "t2", tier=2)  # someone to escalate to
    # The breach itself lands (apply_once); the escalation's guarded write then loses to an accept.
    race_once(routing, {"status": Status.ACCEPTED.value})
    with pytest.raises(RetryLater):
        await routing.clocks.on_timer(timer)
    breached = await routing.store.work_order(wo["_id"])
    assert breached is not None and breached.get("escalation_due") is True
    assert breached.get("escalation_level") is None
    await routing.clocks.on_timer(timer)  # the timer module runs a failed timer again
    escalated = await routing.store.work_order(wo["_id"])
    assert escalated is not None and escalated.get("escalation_due") is False
    assert escalated["escalation_level"] == "tier2" and escalated["technician_id"] == "t2"
    assert await held_slots(routing) == {"t1": 0, "t2": 1}


async def test_the_reconciler_releases_slots_no_open_work_order_holds(routing: RoutingService) -> None:
    live = await dispatch(routing, "R-live")
    ended = await dispatch(routing, "R-ended")
    # A crash between taking a slot and writing the work order leaves a slot nobody holds; a crash
    # between ending a work order and releasing its slot leaves one a closed work order "holds".
    assert await routing.store.reserve("t1", "R-ghost#1", 5)
    await routing.store.work_orders.update_one({"_id": ended["_id"]}, {"$set": {"status": "cancelled"}})
    assert await held_slots(routing) == {"t1": 3}
    assert await routing.reap_slots(grace_s=60) == 0  # too young: a dispatch may still be writing
    assert await routing.reap_slots(grace_s=0) == 2
    assert await held_slots(routing) == {"t1": 1}
    kept = await routing.store.technician_doc("t1")
    assert kept is not None and kept["active_ids"] == [f"{live['_id']}#1"]


async def test_a_slot_seen_orphaned_is_released_after_the_grace_unless_its_work_order_holds_it_by_then(
    routing: RoutingService,
) -> None:
    """How long a slot has been held by no work order is kept by the reconciler, not as a time per slot
    in the technician's document (which every held slot would grow): a slot is released once it has
    been seen orphaned for the grace, at whichever pass that falls, full or not; one whose work order
    holds it by then (a dispatch or hand-over that was still writing) is kept."""
    moving = await dispatch(routing, "R-moving")
    assert await routing.store.reserve("t1", "R-ghost#1", 5)  # a crash before the work order's write
    doc = await routing.store.technician_doc("t1")
    assert doc is not None and not doc.get("slot_at")  # no time per slot in the document
    # A hand-over in flight: the work order names its next technician before t1's slot is given back.
    await routing.store.work_orders.update_one({"_id": moving["_id"]}, {"$set": {"technician_id": "t9"}})
    assert await routing.reap_slots(grace_s=0.5) == 0  # both seen orphaned just now
    await routing.store.work_orders.update_one({"_id": moving["_id"]}, {"$set": {"technician_id": "t1"}})
    await asyncio.sleep(0.6)
    assert await routing.reap_slots(grace_s=0.5) == 1  # not a full pass, yet the orphans are looked at
    assert await held_slots(routing) == {"t1": 1}
    kept = await routing.store.technician_doc("t1")
    assert kept is not None and kept["active_ids"] == [f"{moving['_id']}#1"]


async def test_the_reconciler_schedules_again_an_armed_sla_timer_that_is_gone(
    routing: RoutingService,
) -> None:
    wo = await dispatch(routing, "R-timer")
    armed = [(c, s["timer_id"]) for c, s in wo["sla"].items() if s.get("timer_id")]
    assert len(armed) == 1  # one armed timer per work order
    clock, tid = armed[0]
    kept = await dispatch(routing, "R-kept")
    [kept_tid] = [s["timer_id"] for s in kept["sla"].values() if s.get("timer_id")]
    before = REARMED._value.get()
    assert await routing.timers.cancel(tid)  # lost: a bug, a hand-deleted document, a restore
    assert await routing.reap_slots(grace_s=0) == 0
    again = await routing.timers.get(tid)
    assert again is not None and again["state"] == "pending"
    assert again["due_at"] == wo["sla"][clock]["next_due_at"]
    assert again["payload"]["pct"] == wo["sla"][clock]["next_pct"]
    assert REARMED._value.get() == before + 1  # the one that was gone, not the one that was there
    assert (await routing.timers.get(kept_tid)) is not None
    # Timers are checked on the full passes a process ending asks for, not on every pass: not on the
    # next one (new slots only), nor on one a failed handler of this process asks for ...
    assert await routing.timers.cancel(kept_tid)
    assert await routing.reap_slots(grace_s=0) == 0
    note_failure()  # names nothing: every held slot, but no timer
    assert await routing.reap_slots(grace_s=0) == 0
    assert await routing.timers.get(kept_tid) is None and REARMED._value.get() == before + 1
    # ... but on one another process's end asks for (the outbox relay's heartbeat found it gone).
    routing.slot_audit.request_full("dead relay")
    assert await routing.reap_slots(grace_s=0) == 0
    assert await routing.timers.get(kept_tid) is not None and REARMED._value.get() == before + 2
    # A clock no longer running (the work order was accepted: its first response recorded) is left alone.
    await routing.store.work_orders.update_one(
        {"_id": wo["_id"]}, {"$set": {f"sla.{clock}.stopped_at": datetime.now(UTC)}}
    )
    assert await routing.timers.cancel(tid)
    routing.slot_audit.request_full("test")
    assert await routing.reap_slots(grace_s=0) == 0
    assert await routing.timers.get(tid) is None and REARMED._value.get() == before + 2


async def test_the_reconciler_schedules_again_the_lost_sla_timer_of_a_queued_work_order(
    routing: RoutingService,
) -> None:
    """A queued work order holds no slot, so the slots do not lead to it: the full pass reads the queue."""
    for n in range(5):  # t1's capacity: the next one queues
        await dispatch(routing, f"R-full-{n}")
    wo = await dispatch(routing, "R-queued", Status.QUEUED)
    [(clock, tid)] = [(c, s["timer_id"]) for c, s in wo["sla"].items() if s.get("timer_id")]
    before = REARMED._value.get()
    assert await routing.timers.cancel(tid)
    routing.slot_audit.request_full("dead relay")
    assert await routing.reap_slots(grace_s=0) == 0
    again = await routing.timers.get(tid)
    assert again is not None and again["due_at"] == wo["sla"][clock]["next_due_at"]
    assert REARMED._value.get() == before + 1


async def test_the_reconciler_schedules_again_the_lost_timers_of_a_pool_offer(
    routing: RoutingService,
) -> None:
    """An offered work order holds no slot either: the full pass reads the pool index and checks the
    offer's SLA timer and its fallback timer; an entry whose work order was claimed meanwhile (its
    entry not yet dropped) gets no fallback timer back."""
    grid = await routing.store.grid_doc("g1")
    assert grid is not None
    pool = {"categories": ["hardware_fault"], "priorities": [], "fallback_after_s": 600}
    await routing.store.put_grid(ServiceGrid.model_validate({**grid_of(grid).model_dump(), "pool": pool}))
    wo = await dispatch(routing, "R-offered", Status.OFFERED)
    claimed = await dispatch(routing, "R-claimed", Status.OFFERED)
    [(clock, sla_timer)] = [(c, s["timer_id"]) for c, s in wo["sla"].items() if s.get("timer_id")]
    fallback = fallback_timer_id("R-offered", 1, wo["offer_no"])
    armed = await routing.timers.get(fallback)
    assert armed is not None
    await routing.store.work_orders.update_one(
        {"_id": "R-claimed"}, {"$set": {"status": Status.ASSIGNED.value, "technician_id": "t1"}}
    )
    gone = [sla_timer, fallback, fallback_timer_id("R-claimed", 1, claimed["offer_no"])]
    for timer in gone:
        assert await routing.timers.cancel(timer)
    sla_before, pool_before = REARMED._value.get(), POOL_REARMED._value.get()
    routing.slot_audit.request_full("dead relay")
    assert await routing.reap_slots(grace_s=0) == 0
    again = await routing.timers.get(fallback)
    assert again is not None and again["due_at"] == armed["due_at"] and again["payload"] == armed["payload"]
    sla_again = await routing.timers.get(sla_timer)
    assert sla_again is not None and sla_again["due_at"] == wo["sla"][clock]["next_due_at"]
    assert await routing.timers.get(gone[2]) is None
    assert (REARMED._value.get(), POOL_REARMED._value.get()) == (sla_before + 1, pool_before + 1)


async def test_queueing_in_a_grid_without_automatic_surge_does_not_count_its_queue(
    routing: RoutingService,
) -> None:
    """A count of a grid's queue reads the whole queue index on the embedded store; only automatic
    surge needs one at each queueing and drain (every grid's queue gauge is the housekeeping pass's)."""

    def queue_counts() -> float:
        return sum(
            s.value
            for metric in DB_COMMANDS.collect()
            for s in metric.samples
            if s.name.endswith("_total")
            and s.labels["collection"] == "queue"
            and s.labels["command"] == "aggregate"
        )

    for n in range(5):  # t1's capacity: the next one queues
        await dispatch(routing, f"R-full-{n}")
    before = queue_counts()
    await dispatch(routing, "R-queued", Status.QUEUED)
    assert await routing.queues.drain("g1") == 0
    assert queue_counts() == before


async def test_a_timer_that_fired_while_the_reconciler_looked_is_not_scheduled_again(
    routing: RoutingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    wo = await dispatch(routing, "R-fired")
    [(clock, tid)] = [(c, s["timer_id"]) for c, s in wo["sla"].items() if s.get("timer_id")]
    get = routing.timers.get

    async def fires_meanwhile(timer_id: str) -> Any:
        if timer_id == tid:  # between the reconciler's read of the work order and of its timer
            await routing.store.work_orders.update_one(
                {"_id": wo["_id"]},
                {
                    "$set": {
                        f"sla.{clock}.fired": [wo["sla"][clock]["next_pct"]],
                        f"sla.{clock}.timer_id": "next",
                    }
                },
            )
            await routing.timers.cancel(tid)
        return await get(timer_id)

    monkeypatch.setattr(routing.timers, "get", fires_meanwhile)
    before = REARMED._value.get()
    assert await routing.reap_slots(grace_s=0) == 0
    assert await get(tid) is None and REARMED._value.get() == before


async def test_the_reconciler_checks_each_new_slot_once_and_every_slot_again_only_on_evidence(
    routing: RoutingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass reads the work orders of the slots taken since the last one, not of every held slot; all of
    them are checked at start-up, after a handler of this process failed without naming its tickets,
    and when another process is gone (the outbox relay's heartbeat calls `request_full`); a failure
    naming its tickets has theirs checked, whenever taken."""
    reads: list[str] = []
    load = routing.store.load_work_order

    async def counted(ticket_id: str) -> Any:
        reads.append(ticket_id)
        return await load(ticket_id)

    monkeypatch.setattr(routing.store, "load_work_order", counted)
    first = await dispatch(routing, "R-first")
    assert await routing.reap_slots(grace_s=0) == 0  # start-up: every held slot
    assert reads == ["R-first"]
    second = await dispatch(routing, "R-second")
    reads.clear()
    assert await routing.reap_slots(grace_s=0) == 0
    assert reads == ["R-second"]  # only the slot taken since
    reads.clear()
    assert await routing.reap_slots(grace_s=0) == 0
    assert reads == []

    # A work order ended without giving its slot back, and no evidence of it: not looked at again ...
    await routing.store.work_orders.update_one({"_id": first["_id"]}, {"$set": {"status": "cancelled"}})
    assert await routing.reap_slots(grace_s=0) == 0
    assert reads == []
    # ... until a handler of this process fails on that ticket: its slots are checked, the leak released
    note_failure(first["_id"])
    assert await routing.reap_slots(grace_s=0) == 1
    assert reads == ["R-first"]  # not the other held slot: the failure named its ticket
    assert await held_slots(routing) == {"t1": 1}
    note_failure()  # a failure that names nothing: every held slot
    reads.clear()
    assert await routing.reap_slots(grace_s=0) == 0
    assert reads == ["R-second"]

    await routing.store.work_orders.update_one({"_id": second["_id"]}, {"$set": {"status": "cancelled"}})
    reads.clear()
    assert await routing.reap_slots(grace_s=0) == 0
    assert reads == []
    routing.slot_audit.request_full("relay left")  # another process gone
    assert await routing.reap_slots(grace_s=0) == 1
    assert reads == ["R-second"]
    assert await held_slots(routing) == {"t1": 0}
