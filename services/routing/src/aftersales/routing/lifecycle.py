"""A work order after dispatch: technician actions, customer replies, cancellation, SLA timers firing,
and re-planning the clocks when a pause ends or a policy, calendar or priority changes."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aftersales.routing.clocks import (
    CLOCKS,
    arm_earliest,
    clock_running,
    now_utc,
    pauses_of,
    plan_state,
    timer_is_current,
)
from aftersales.routing.domain import HOLDING_STATUSES, OPEN_STATUSES, Action, Status, check_transition
from aftersales.routing.handover import escalate, hand_back
from aftersales.routing.router import PRIORITY_RANK, SLA_BREACHES, SLA_WARNINGS, Router, event
from aftersales.routing.sla import SlaPolicy
from aftersales.routing.store import WORK_ORDERS
from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.common import CustomerTier, Priority
from aftersales.shared.contracts.events import (
    SlaBreached,
    SlaClock,
    SlaWarning,
    WorkOrderAccepted,
    WorkOrderPending,
    WorkOrderResolved,
    WorkOrderStarted,
)
from aftersales.shared.errors import Conflict, Forbidden, NotFound, RetryLater
from aftersales.shared.http import Principal
from aftersales.shared.idempotency import apply_once
from aftersales.shared.outbox import with_events
from aftersales.shared.settings import Scope
from aftersales.shared.timers import Timer

log = logging.getLogger("aftersales.routing")


class Lifecycle:
    def __init__(self, router: Router) -> None:
        self.router = router
        self.store = router.store
        self.timers = router.runtime.timers

    # ------------------------------------------------------------------ technician actions

    async def act(
        self, ticket_id: str, action: Action, principal: Principal, *, reason: str = "", code: str = ""
    ) -> dict[str, Any]:
        """Apply a technician or supervisor action; return the work order afterwards."""
        wo = await self.store.work_order(ticket_id)
        if wo is None:
            raise NotFound(f"work order {ticket_id} not found", field="ticket_id")
        supervisor = principal.has(Scope.SUPERVISOR)
        if not supervisor and wo.get("technician_id") != principal.subject:
            raise Forbidden(f"work order {ticket_id} is not assigned to {principal.subject}")
        target = check_transition(action, wo["status"])
        now = now_utc()
        if action is Action.ESCALATE:
            outcome = await escalate(
                self.router, wo, reason="supervisor" if supervisor else "technician", now=now
            )
        elif action is Action.HAND_BACK:
            outcome = await hand_back(self.router, wo, reason=reason or "handed back", now=now)
        elif action is Action.START and wo["status"] == Status.PENDING_CUSTOMER:
            outcome = "ok" if await self.resume(wo, now) else "conflict"
        else:
            assert target is not None
            outcome = "ok" if await self._simple(wo, action, target, now, reason, code) else "conflict"
        if outcome == "conflict":
            raise Conflict(f"work order {ticket_id} changed meanwhile; read it and try again")
        after = await self.store.work_order(ticket_id)
        assert after is not None
        return after

    async def _simple(
        self, wo: Mapping[str, Any], action: Action, target: Status, now: datetime, reason: str, code: str
    ) -> bool:
        ticket_id, round_, tech = wo["_id"], wo["round"], wo["technician_id"]
        base = {"ticket_id": ticket_id, "grid_id": wo["grid_id"], "round": round_, "occurred_at": now}
        sets: dict[str, Any] = {"status": target.value, "updated_at": now}
        data: Any
        if action is Action.ACCEPT:
            sets |= {"accepted_at": now, "sla.first_response.stopped_at": now}
            resolution = dict(wo["sla"]["resolution"])
            if clock_running(wo, SlaClock.RESOLUTION) and not resolution.get("timer_id"):
                states = {SlaClock.RESOLUTION.value: resolution}
                if await arm_earliest(self.timers, ticket_id=ticket_id, round_=round_, states=states):
                    sets["sla.resolution.timer_id"] = resolution["timer_id"]
            data = WorkOrderAccepted(**base, technician_id=tech)
        elif action is Action.START:
            sets |= {"started_work_at": now}
            data = WorkOrderStarted(**base, technician_id=tech)
        elif action is Action.PENDING_CUSTOMER:
            sets |= {"paused_since": now}
            data = WorkOrderPending(**base, technician_id=tech, reason=reason)
        else:
            sets |= {f"sla.{c.value}.stopped_at": now for c in CLOCKS if clock_running(wo, c)}
            sets |= {"resolved_at": now, "resolution_code": code}
            facts = wo["facts"]
            data = WorkOrderResolved(
                **base,
                technician_id=tech,
                resolution_code=code,
                escalated=bool(wo.get("escalation_level")),
                priority=facts["priority"],
                category=facts["category"],
            )
        guard = {"round": round_, "status": wo["status"], "technician_id": tech}
        if not await self.store.update_work_order(ticket_id, guard, {"$set": sets}, [event(data, ticket_id)]):
            return False
        if action is Action.ACCEPT:
            await self._cancel(wo, SlaClock.FIRST_RESPONSE)
        elif action is Action.PENDING_CUSTOMER:
            for clock in CLOCKS:
                await self._cancel(wo, clock)
        elif action is Action.RESOLVE:
            for clock in CLOCKS:
                await self._cancel(wo, clock)
            await self.router.capacity_freed(await self.router._release_holder(wo))
        return True

    async def _cancel(self, wo: Mapping[str, Any], clock: SlaClock) -> None:
        tid = wo.get("sla", {}).get(clock.value, {}).get("timer_id")
        if tid:
            await self.timers.cancel(tid)

    # ------------------------------------------------------------------ clocks: resume and re-plan

    async def resume(self, wo: Mapping[str, Any], now: datetime) -> bool:
        """End the customer pause and move the running clocks' due times (and their timers) by it."""
        pause = {"start": wo["paused_since"], "end": now}
        pauses = [*pauses_of({"pauses": wo.get("pauses", [])}), (pause["start"], pause["end"])]
        sets = {"status": Status.IN_PROGRESS.value, "paused_since": None, "updated_at": now}
        # Re-plan with the current policy: a change made while paused applies from now on.
        sets |= await self._replan(wo, pauses, await self.store.cached_policy())
        data = WorkOrderStarted(
            ticket_id=wo["_id"],
            grid_id=wo["grid_id"],
            round=wo["round"],
            occurred_at=now,
            technician_id=wo["technician_id"],
        )
        ok = await self.store.update_work_order(
            wo["_id"],
            {"round": wo["round"], "status": Status.PENDING_CUSTOMER.value},
            {"$set": sets, "$push": {"pauses": pause}},
            [event(data, wo["_id"])],
        )
        if ok:
            await self._retire(wo, sets)
        return ok

    async def _replan(
        self,
        wo: Mapping[str, Any],
        pauses: list[Any],
        policy: SlaPolicy | None = None,
        facts: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Return `$set` fields re-arming every running clock with a new timer generation.

        The new generation's timer is armed before the caller's guarded write (a stale one fires and
        does nothing); the timers it replaces are cancelled only by `_retire` after that write landed,
        so a lost write never leaves a work order pointing at a cancelled timer."""
        view = await self.router.view()
        calendar = self.router.calendar_of(view, wo["grid_id"])
        facts = facts or wo["facts"]
        states: dict[str, dict[str, Any]] = {}
        for clock in CLOCKS:
            if not clock_running(wo, clock):
                continue
            state = wo["sla"][clock.value]
            target = state["target_minutes"]
            if policy is not None:
                target = policy.minutes(
                    clock, Priority(facts["priority"]), CustomerTier(facts.get("customer_tier", "standard"))
                )
            states[clock.value] = plan_state(
                started_at=state["started_at"],
                target_minutes=target,
                calendar=calendar,
                pauses=pauses,
                fired_pct=list(state.get("fired", [])),
                generation=int(state.get("generation", 0)) + 1,
            )
        await arm_earliest(self.timers, ticket_id=wo["_id"], round_=wo["round"], states=states)
        return {f"sla.{name}": state for name, state in states.items()}

    async def _retire(self, wo: Mapping[str, Any], sets: Mapping[str, Any]) -> None:
        """After a re-plan landed: cancel the timers of the generations it replaced."""
        for key in sets:
            if key.startswith("sla."):
                old = wo["sla"][key.split(".", 1)[1]].get("timer_id")
                if old and old != sets[key].get("timer_id"):
                    await self.timers.cancel(old)

    async def replan_open(self, query: Mapping[str, Any], policy: SlaPolicy | None = None) -> int:
        """Re-plan the clocks of open work orders matching `query` (policy or calendar changed)."""
        count = 0
        for wo in await self.store.open_work_orders(query):
            if wo["status"] == Status.PENDING_CUSTOMER:
                # Paused: due times are re-planned when the pause ends; keep the new targets now.
                continue
            sets = await self._replan(wo, pauses_of(wo), policy)
            if not sets:
                continue
            guard = {"round": wo["round"], "status": wo["status"]}
            guard |= {f"{k}.generation": wo["sla"][k.split(".", 1)[1]]["generation"] for k in sets}
            sets["updated_at"] = now_utc()
            if await self.store.update_work_order(wo["_id"], guard, {"$set": sets}, []):
                await self._retire(wo, sets)
                count += 1
            # else the work order moved meanwhile; whatever moved it planned its clocks itself
        return count

    # ------------------------------------------------------------------ ticket events

    async def customer_replied(self, ticket_id: str) -> None:
        wo = await self.store.work_order(ticket_id)
        if (
            wo is not None
            and wo["status"] == Status.PENDING_CUSTOMER
            and not await self.resume(wo, now_utc())
        ):
            raise RetryLater(f"work order {ticket_id} changed while resuming; decide again")

    async def priority_changed(self, ticket_id: str, priority: str) -> None:
        wo = await self.store.work_order(ticket_id)
        if wo is None or wo["status"] not in OPEN_STATUSES or wo["facts"]["priority"] == priority:
            return
        facts = {**wo["facts"], "priority": priority}
        policy, _ = await self.store.policy()
        sets = await self._replan(wo, pauses_of(wo), policy, facts)
        sets |= {
            "facts.priority": priority,
            "priority_rank": PRIORITY_RANK[priority],
            "updated_at": now_utc(),
        }
        if not await self.store.update_work_order(
            ticket_id, {"round": wo["round"], "status": wo["status"]}, {"$set": sets}, []
        ):
            raise RetryLater(f"work order {ticket_id} changed while re-planning; decide again")
        await self._retire(wo, sets)

    async def ended(self, ticket_id: str, status: Status) -> None:
        """The ticket was cancelled or closed: stop its clocks and free its technician."""
        wo = await self.store.work_order(ticket_id)
        if wo is None or wo["status"] not in OPEN_STATUSES:
            return
        ok = await self.store.update_work_order(
            ticket_id,
            {"round": wo["round"], "status": wo["status"]},
            {"$set": {"status": status.value, "updated_at": now_utc(), "paused_since": None}},
            [],
        )
        if not ok:  # accepted, resolved or escalated meanwhile: read again and end what is there now
            raise RetryLater(f"work order {ticket_id} changed while ending; decide again")
        await self.store.dequeue(ticket_id)
        for clock in CLOCKS:  # by id: a query by group would scan on FerretDB
            await self._cancel(wo, clock)
        if wo["status"] in HOLDING_STATUSES:
            await self.router.capacity_freed(await self.router._release_holder(wo))

    # ------------------------------------------------------------------ SLA timers

    async def on_timer(self, timer: Timer) -> None:
        """Fire a warning or breach once; stale timers (re-planned, stopped, paused) do nothing."""
        payload = timer.payload
        wo = await self.store.work_order(str(payload["ticket_id"]))
        if wo is not None and wo.get("escalation_due") and wo["round"] == payload["round"]:
            await self._escalate_due(wo)  # a breach whose escalation did not land (crash or lost race)
        if wo is None or not timer_is_current(wo, payload):
            return
        clock, pct, gen = SlaClock(payload["clock"]), int(payload["pct"]), int(payload["generation"])
        state = wo["sla"][clock.value]
        now = now_utc()
        base = {
            "ticket_id": wo["_id"],
            "grid_id": wo["grid_id"],
            "round": wo["round"],
            "occurred_at": now,
            "clock": clock,
            "due_at": state["due_at"] or timer.due_at,
            "technician_id": wo.get("technician_id"),
        }
        data: Any = SlaBreached(**base) if pct == 100 else SlaWarning(**base, threshold_pct=pct)
        view = await self.router.view()
        next_state = plan_state(
            started_at=state["started_at"],
            target_minutes=state["target_minutes"],
            calendar=self.router.calendar_of(view, wo["grid_id"]),
            pauses=pauses_of(wo),
            fired_pct=[*state.get("fired", []), pct],
            generation=gen,
        )
        # Arm the next earliest threshold of either clock (one armed timer per work order).
        states = {clock.value: next_state}
        other = SlaClock.RESOLUTION if clock is SlaClock.FIRST_RESPONSE else SlaClock.FIRST_RESPONSE
        if clock_running(wo, other) and not wo["sla"][other.value].get("timer_id"):
            states[other.value] = dict(wo["sla"][other.value])
        armed = await arm_earliest(self.timers, ticket_id=wo["_id"], round_=wo["round"], states=states)
        sets: dict[str, Any] = {f"sla.{clock.value}": next_state}
        if pct == 100 and wo.get("escalation_level") != "supervisor":
            sets["escalation_due"] = True  # cleared by the escalation's own write
        if armed == other.value:
            sets[f"sla.{other.value}.timer_id"] = states[other.value]["timer_id"]
        applied = await apply_once(
            self.store.work_orders,
            wo["_id"],
            timer.id,
            with_events({"$set": sets}, Topic.ASSIGNMENTS, [event(data, wo["_id"])]),
            extra_filter={
                "round": wo["round"],
                f"sla.{clock.value}.generation": gen,
                f"sla.{clock.value}.next_pct": pct,
            },
        )
        if not applied:
            return
        self.store.hint(WORK_ORDERS, wo["_id"])
        if pct < 100:
            SLA_WARNINGS.labels(clock.value, wo["grid_id"]).inc()
            return
        SLA_BREACHES.labels(clock.value, wo["grid_id"]).inc()
        log.warning("SLA breached", extra={"ticket_id": wo["_id"], "clock": clock.value})
        fresh = await self.store.work_order(wo["_id"])
        if fresh is not None and fresh.get("escalation_due"):
            await self._escalate_due(fresh)

    async def _escalate_due(self, wo: Mapping[str, Any]) -> None:
        """Escalate a breached work order; a lost race raises, so the timer runs again and retries."""
        if wo["status"] not in OPEN_STATUSES:
            await self.store.update_work_order(
                wo["_id"],
                {"round": wo["round"], "status": wo["status"]},
                {"$set": {"escalation_due": False}},
                [],
            )
            return
        if await escalate(self.router, wo, reason="sla_breach", now=now_utc()) == "conflict":
            raise RetryLater(f"escalation of {wo['_id']} lost a race; it is retried")
