"""A work order's SLA clocks on durable timers: re-plan them when a pause ends or a policy, calendar or
priority changes (new timer generation first, old ones retired after the write), and fire a warning or
breach exactly once, escalating a breach (`escalation_due` until the escalation lands)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aftersales.routing import messages
from aftersales.routing.clocks import (
    CLOCKS,
    arm_earliest,
    clock_running,
    now_utc,
    pauses_for,
    pauses_of,
    plan_state,
    timer_is_ahead,
    timer_is_current,
)
from aftersales.routing.domain import OPEN_STATUSES, Status, WorkOrder
from aftersales.routing.grids import GridDirectory
from aftersales.routing.handover import Handover
from aftersales.routing.metrics import SLA_BREACHES, SLA_WARNINGS
from aftersales.routing.sla import SlaPolicy
from aftersales.routing.store import Guard, RoutingStore
from aftersales.shared.calendar import BusinessCalendar, Pause, business_elapsed
from aftersales.shared.contracts.common import CustomerTier, Priority
from aftersales.shared.contracts.events import SlaClock
from aftersales.shared.errors import RetryLater
from aftersales.shared.timers import NOT_WRITTEN_RETRIES, DurableTimers, Timer

log = logging.getLogger("aftersales.routing")
REPLAN_ATTEMPTS = 5  # a work order re-planned for a policy or calendar change that keeps moving meanwhile


def clocks_as_read(wo: WorkOrder) -> dict[str, Any]:
    """Return the Guard fields that make a write of re-planned clocks lose to any change of those clocks
    since `wo` was read: each clock's generation (another re-plan) and armed timer (a threshold fired)."""
    return {
        "generations": {name: int(state.get("generation", 0)) for name, state in wo.sla.items()},
        "timer_ids": {name: state.get("timer_id") for name, state in wo.sla.items()},
    }


def thresholds_due(
    state: Mapping[str, Any],
    calendar: BusinessCalendar,
    pauses: list[Pause],
    *,
    pct: int,
    generation: int,
    now: datetime,
) -> tuple[list[int], dict[str, Any]]:
    """Return the thresholds of a clock to record with `pct` (it, and each later one already past due at
    `now`) and the clock's state after them (its next threshold not armed yet)."""
    recorded = [pct]
    while True:
        planned = plan_state(
            started_at=state["started_at"],
            target_minutes=state["target_minutes"],
            calendar=calendar,
            pauses=pauses,
            fired_pct=[*state.get("fired", []), *recorded],
            generation=generation,
        )
        due = planned["next_due_at"]
        if planned["next_pct"] is None or due is None or due > now:
            return recorded, planned
        recorded.append(int(planned["next_pct"]))


@dataclass(frozen=True, slots=True)
class SlaClocks:
    """Re-planning and firing of the SLA clocks of work orders."""

    store: RoutingStore
    grids: GridDirectory
    timers: DurableTimers
    handover: Handover

    # ------------------------------------------------------------------ re-plan

    async def replan(
        self,
        wo: WorkOrder,
        pauses: list[Pause],
        policy: SlaPolicy | None = None,
        facts: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Return the changes re-arming every running clock with a new timer generation.

        The new generation's timer is armed before the caller's guarded write (a stale one fires and
        does nothing); the timers it replaces are cancelled only by `retire` after that write landed,
        so a lost write never leaves a work order pointing at a cancelled timer."""
        view = await self.grids.view()
        calendar = view.calendar_of(wo.grid_id)
        facts = facts or wo.facts
        pause_on = (policy or await self.store.cached_policy()).pause_on
        now = now_utc()
        states: dict[str, dict[str, Any]] = {}
        for clock in CLOCKS:
            if not clock_running(wo, clock):
                continue
            state = wo.sla[clock.value]
            target = state["target_minutes"]
            if policy is not None:
                target = policy.minutes(
                    clock, Priority(facts["priority"]), CustomerTier(facts.get("customer_tier", "standard"))
                )
            clock_pauses = pauses_for(wo, clock, pause_on, pauses)
            planned = plan_state(
                started_at=state["started_at"],
                target_minutes=target,
                calendar=calendar,
                pauses=clock_pauses,
                fired_pct=list(state.get("fired", [])),
                generation=int(state.get("generation", 0)) + 1,
            )
            if planned["due_at"] is None:  # paused: read models show what is left instead
                elapsed = business_elapsed(state["started_at"], now, calendar, clock_pauses)
                planned["remaining_s"] = max(0.0, target * 60 - elapsed.total_seconds())
            states[clock.value] = planned
        await arm_earliest(self.timers, ticket_id=wo.ticket_id, round_=wo.round, states=states)
        return {f"sla.{name}": state for name, state in states.items()}

    async def remaining_at_pause(self, wo: WorkOrder, now: datetime) -> dict[str, Any]:
        """Return the changes recording the business seconds each running clock has left as the work
        order starts waiting on the customer: read models show them while paused, instead of a due time
        that no longer holds (the resume re-plans the whole clock state, dropping them)."""
        calendar = (await self.grids.view()).calendar_of(wo.grid_id)
        out: dict[str, Any] = {}
        for clock in CLOCKS:
            due_at = wo.sla.get(clock.value, {}).get("due_at")
            if clock_running(wo, clock) and due_at is not None:
                out[f"sla.{clock.value}.remaining_s"] = business_elapsed(
                    now, due_at, calendar
                ).total_seconds()
        return out

    async def retire(self, wo: WorkOrder, changes: Mapping[str, Any]) -> None:
        """After a re-plan landed: cancel the timers of the generations it replaced."""
        for key in changes:
            if key.startswith("sla."):
                old = wo.sla[key.split(".", 1)[1]].get("timer_id")
                if old and old != changes[key].get("timer_id"):
                    await self.timers.cancel(old)

    async def replan_open(self, *, grid_id: str | None = None, policy: SlaPolicy | None = None) -> int:
        """Re-plan the clocks of open work orders, of one grid or all (policy or calendar changed)."""
        count = 0
        for first in await self.store.open_work_orders(grid_id):
            wo: WorkOrder | None = first
            for _ in range(REPLAN_ATTEMPTS):
                if wo is None or wo.status not in OPEN_STATUSES or (grid_id and wo.grid_id != grid_id):
                    break
                if wo.status == Status.PENDING_CUSTOMER:
                    # Paused: due times are re-planned when the pause ends; keep the new targets now.
                    break
                changes = await self.replan(wo, pauses_of(wo), policy)
                if not changes:
                    break
                guard = Guard(round=wo.round, status=wo.status, **clocks_as_read(wo))
                changes["updated_at"] = now_utc()
                if await self.store.write_work_order(wo.ticket_id, guard, changes):
                    await self.retire(wo, changes)
                    count += 1
                    break
                # It moved meanwhile (a threshold fired, a technician accepted): whatever moved it may
                # have planned with the policy as it was, so read it again and re-plan on the new one.
                wo = await self.store.load_work_order(wo.ticket_id)
            else:
                log.warning(
                    "work order kept changing; its clocks were not re-planned",
                    extra={"ticket_id": first.ticket_id},
                )
        return count

    async def cancel(self, wo: WorkOrder, clock: SlaClock) -> None:
        tid = wo.sla.get(clock.value, {}).get("timer_id")
        if tid:
            await self.timers.cancel(tid)

    # ------------------------------------------------------------------ timers firing

    async def on_timer(self, timer: Timer) -> None:
        """Fire a warning or breach once; stale timers (re-planned, stopped, paused) do nothing."""
        payload = timer.payload
        wo = await self.store.load_work_order(str(payload["ticket_id"]))
        if wo is not None and wo.escalation_due and wo.round == payload["round"]:
            await self.escalate_due(wo)  # a breach whose escalation did not land (crash or lost race)
        if wo is None or not timer_is_current(wo, payload):
            if timer_is_ahead(wo, payload) and timer.attempts < NOT_WRITTEN_RETRIES:
                # Armed before its write, which has not landed yet: look again rather than drop the
                # clock's only armed timer (the write would point at a timer already gone).
                raise RetryLater(f"work order {payload['ticket_id']} not written up to this SLA timer yet")
            return
        clock, pct = SlaClock(payload["clock"]), int(payload["pct"])
        fired = await self._record(wo, timer, clock, pct, int(payload["generation"]))
        for each in fired:
            (SLA_BREACHES if each == 100 else SLA_WARNINGS).labels(clock.value, wo.grid_id).inc()
        if 100 not in fired:
            return
        log.warning("SLA breached", extra={"ticket_id": wo.ticket_id, "clock": clock.value})
        fresh = await self.store.load_work_order(wo.ticket_id)
        if fresh is not None and fresh.escalation_due:
            await self.escalate_due(fresh)

    async def _record(self, wo: WorkOrder, timer: Timer, clock: SlaClock, pct: int, gen: int) -> list[int]:
        """Record the threshold with its event, and with it every later threshold of the clock already
        past due, then arm the next one; return the thresholds recorded (none: another firing did it).

        A clock planned late (a ticket reaching routing long after it came in, a pause ending after
        the due time) has several thresholds due at once: they go in this one write, each with its own
        event, instead of one timer firing and one write each (which made a consumer that fell behind
        slower still: every late ticket cost three firings and writes)."""
        state = wo.sla[clock.value]
        now = now_utc()
        calendar = (await self.grids.view()).calendar_of(wo.grid_id)
        pauses = pauses_for(wo, clock, (await self.store.cached_policy()).pause_on, pauses_of(wo))
        recorded, next_state = thresholds_due(state, calendar, pauses, pct=pct, generation=gen, now=now)
        due_at = state["due_at"] or timer.due_at
        events = [messages.threshold_fired(wo, clock, p, due_at=due_at, now=now) for p in recorded]
        # Arm the next earliest threshold of either clock (one armed timer per work order).
        states = {clock.value: next_state}
        other = SlaClock.RESOLUTION if clock is SlaClock.FIRST_RESPONSE else SlaClock.FIRST_RESPONSE
        if clock_running(wo, other) and not wo.sla[other.value].get("timer_id"):
            states[other.value] = dict(wo.sla[other.value])
        armed = await arm_earliest(self.timers, ticket_id=wo.ticket_id, round_=wo.round, states=states)
        changes: dict[str, Any] = {f"sla.{clock.value}": next_state}
        if 100 in recorded and wo.escalation_level != "supervisor":
            changes["escalation_due"] = True  # cleared by the escalation's own write
        if armed == other.value:
            changes[f"sla.{other.value}.timer_id"] = states[other.value]["timer_id"]
        applied = await self.store.record_threshold(
            wo.ticket_id,
            timer.id,
            round_=wo.round,
            clock=clock.value,
            generation=gen,
            pct=pct,
            changes=changes,
            events=events,
        )
        return recorded if applied else []

    async def escalate_due(self, wo: WorkOrder) -> None:
        """Escalate a breached work order; a lost race raises, so the timer runs again and retries."""
        if wo.status not in OPEN_STATUSES:
            guard = Guard(round=wo.round, status=wo.status)
            await self.store.write_work_order(wo.ticket_id, guard, {"escalation_due": False})
            return
        if await self.handover.escalate(wo, reason="sla_breach", now=now_utc()) == "conflict":
            raise RetryLater(f"escalation of {wo.ticket_id} lost a race; it is retried")
