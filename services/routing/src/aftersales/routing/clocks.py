"""SLA clocks of work orders on durable timers: arm the next threshold, re-arm after a pause or a policy
or calendar change, and fire warnings and breaches exactly once (apply_once keyed by the timer id)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any

from aftersales.routing.domain import Status, WorkOrder
from aftersales.routing.field_holds import resolution_pauses
from aftersales.routing.sla import ClockPlan, plan_clock, timer_id
from aftersales.routing.timers import SLA_TIMER
from aftersales.shared.calendar import BusinessCalendar, Pause
from aftersales.shared.contracts.events import SlaClock
from aftersales.shared.timers import DurableTimers

CLOCKS = (SlaClock.FIRST_RESPONSE, SlaClock.RESOLUTION)
Clocked = WorkOrder | Mapping[str, Any]  # a typed work order, or its fields as stored


def _fields(wo: Clocked) -> Mapping[str, Any]:
    return wo.clock_fields() if isinstance(wo, WorkOrder) else wo


def pauses_of(wo: Clocked, now: datetime | None = None) -> list[Pause]:
    """Return a work order's pauses of this round, the open one (waiting on the customer) included."""
    wo = _fields(wo)
    pauses: list[Pause] = [(p["start"], p["end"]) for p in wo.get("pauses", [])]
    if wo.get("paused_since") is not None:
        pauses.append((wo["paused_since"], None))
    return pauses


def pauses_for(wo: WorkOrder, clock: SlaClock, pause_on: Collection[str], base: list[Pause]) -> list[Pause]:
    """Return the pauses of one clock: `base` (the customer's, as `pauses_of` gives them) and, for the
    resolution clock, those on-site work makes under the policy's `pause_on`."""
    if clock is not SlaClock.RESOLUTION:
        return base
    return [*base, *resolution_pauses(wo.fieldwork, pause_on)]


def clock_running(wo: Clocked, clock: SlaClock) -> bool:
    """True while a clock may still warn or breach: not stopped and the work order still open."""
    wo = _fields(wo)
    state = wo.get("sla", {}).get(clock.value)
    if not state or state.get("stopped_at") is not None:
        return False
    return wo.get("status") not in (Status.RESOLVED, Status.CANCELLED, Status.CLOSED)


def plan_state(
    *,
    started_at: datetime,
    target_minutes: float,
    calendar: BusinessCalendar,
    pauses: list[Pause],
    fired_pct: list[int],
    generation: int,
) -> dict[str, Any]:
    """Return the stored state of one clock: its due time and next threshold (not armed yet)."""
    plan: ClockPlan = plan_clock(
        started_at=started_at,
        target_minutes=target_minutes,
        calendar=calendar,
        pauses=pauses,
        fired_pct=fired_pct,
    )
    return {
        "started_at": started_at,
        "target_minutes": target_minutes,
        "due_at": plan.due_at,
        "next_pct": plan.next_pct,
        "next_due_at": plan.next_due_at,
        "timer_id": None,
        "fired": list(fired_pct),
        "generation": generation,
        "stopped_at": None,
        "breached": 100 in fired_pct,
    }


async def arm_earliest(
    timers: DurableTimers, *, ticket_id: str, round_: int, states: Mapping[str, dict[str, Any]]
) -> str | None:
    """Schedule the durable timer of the earliest pending threshold among `states` (modified in place:
    its `timer_id` is set) and return that clock's name.

    A work order has at most one armed SLA timer: when it fires, the next earliest threshold of either
    clock is armed. That halves the timer writes per work order. Called *before* the work-order write
    that stores the states: a timer whose write never happened finds another generation and does nothing.
    """
    pending = [
        (state["next_due_at"], name)
        for name, state in states.items()
        if state.get("next_due_at") is not None
        and state.get("stopped_at") is None
        and not state.get("timer_id")
    ]
    if not pending:
        return None
    due, name = min(pending)
    state = states[name]
    tid = timer_id(ticket_id, round_, SlaClock(name), state["next_pct"], state["generation"])
    await timers.schedule(tid, SLA_TIMER, due, _payload(ticket_id, round_, name, state), group=ticket_id)
    state["timer_id"] = tid
    return name


def _payload(ticket_id: str, round_: int, clock: str, state: Mapping[str, Any]) -> dict[str, Any]:
    """What an SLA timer carries: the work order's round, clock, threshold and clock generation."""
    return {
        "ticket_id": ticket_id,
        "round": round_,
        "clock": clock,
        "pct": state["next_pct"],
        "generation": state["generation"],
    }


async def rearm_lost(
    timers: DurableTimers, wo: WorkOrder, reload: Callable[[str], Awaitable[WorkOrder | None]]
) -> list[str]:
    """Schedule again the armed timer of a running clock whose timer document is gone; return their ids.

    Timers are armed before the write that records them and retired after it, fenced when claimed and
    never given up while the store is away, so a recorded timer should always exist until it fires;
    this is the reconciler's check that it does (one read by `_id` per armed clock). A timer missing is
    confirmed on the work order as it is now (`reload`): one that fired meanwhile has moved it on."""
    rearmed: list[str] = []
    for clock in CLOCKS:
        state = wo.sla.get(clock.value) or {}
        tid, due = state.get("timer_id"), state.get("next_due_at")
        if not tid or due is None:
            continue
        payload = _payload(wo.ticket_id, wo.round, clock.value, state)
        if not timer_is_current(wo, payload) or await timers.get(tid) is not None:
            continue
        fresh = await reload(wo.ticket_id)
        still = fresh is not None and fresh.sla.get(clock.value, {}).get("timer_id") == tid
        if still and timer_is_current(fresh, payload):
            await timers.schedule(tid, SLA_TIMER, due, payload, group=wo.ticket_id)
            rearmed.append(tid)
    return rearmed


def timer_is_current(wo: Clocked | None, payload: Mapping[str, Any]) -> bool:
    """True when a fired timer still belongs to the work order's round, clock generation and threshold."""
    if wo is None:
        return False
    wo = _fields(wo)
    if wo.get("round") != payload["round"]:
        return False
    clock = SlaClock(payload["clock"])
    if not clock_running(wo, clock) or wo.get("status") == Status.PENDING_CUSTOMER:
        return False
    state = wo["sla"][clock.value]
    return bool(
        state.get("generation") == payload["generation"]
        and payload["pct"] not in state.get("fired", [])
        and state.get("next_pct") == payload["pct"]
    )


def timer_is_ahead(wo: Clocked | None, payload: Mapping[str, Any]) -> bool:
    """True when a fired timer was armed for a state the work order has not reached yet: its round, clock
    generation or threshold is past the stored one. Timers are armed just before the write that stores
    them, so the write may still be in flight (or never land)."""
    if wo is None:
        return True
    wo = _fields(wo)
    if wo.get("round", 0) != payload["round"]:
        return bool(wo.get("round", 0) < payload["round"])
    state = wo.get("sla", {}).get(SlaClock(payload["clock"]).value, {})
    generation = int(state.get("generation", 0))
    if generation != payload["generation"]:
        return generation < int(payload["generation"])
    next_pct = state.get("next_pct")
    return next_pct is not None and payload["pct"] not in state.get("fired", []) and next_pct < payload["pct"]


def now_utc() -> datetime:
    return datetime.now(UTC)
