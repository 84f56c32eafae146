"""A work order after dispatch: technician and supervisor actions, the customer's reply ending a pause,
a priority change, and the ticket ending (cancelled or closed)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from aftersales.routing import messages
from aftersales.routing.capacity import Capacity
from aftersales.routing.clocks import CLOCKS, arm_earliest, clock_running, now_utc, pauses_of
from aftersales.routing.domain import (
    HOLDING_STATUSES,
    OPEN_STATUSES,
    PRIORITY_RANK,
    Action,
    Status,
    WorkOrder,
    check_transition,
)
from aftersales.routing.handover import Handover
from aftersales.routing.queues import Queues
from aftersales.routing.sla_clocks import SlaClocks, clocks_as_read
from aftersales.routing.store import Guard, RoutingStore
from aftersales.shared.contracts.events import SlaClock
from aftersales.shared.errors import Conflict, Forbidden, NotFound, RetryLater
from aftersales.shared.http import Principal
from aftersales.shared.settings import Scope


@dataclass(frozen=True, slots=True)
class WorkOrders:
    """Actions on a work order after dispatch, and the ticket events that change it."""

    store: RoutingStore
    capacity: Capacity
    queues: Queues
    handover: Handover
    clocks: SlaClocks

    # ------------------------------------------------------------------ technician actions

    async def act(
        self, ticket_id: str, action: Action, principal: Principal, *, reason: str = "", code: str = ""
    ) -> dict[str, Any]:
        """Apply a technician or supervisor action; return the work order afterwards."""
        wo = await self.store.load_work_order(ticket_id)
        if wo is None:
            raise NotFound(f"work order {ticket_id} not found", field="ticket_id")
        supervisor = principal.has(Scope.SUPERVISOR)
        if not supervisor and wo.technician_id != principal.subject:
            raise Forbidden(f"work order {ticket_id} is not assigned to {principal.subject}")
        target = check_transition(action, wo.status)
        now = now_utc()
        if action is Action.ESCALATE:
            reason = "supervisor" if supervisor else "technician"
            outcome = await self.handover.escalate(wo, reason=reason, now=now)
        elif action is Action.HAND_BACK:
            outcome = await self.handover.hand_back(wo, reason=reason or "handed back", now=now)
        elif action is Action.START and wo.status == Status.PENDING_CUSTOMER:
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
        self, wo: WorkOrder, action: Action, target: Status, now: datetime, reason: str, code: str
    ) -> bool:
        """Accept, start, wait on the customer or resolve; then stop clocks and free the slot as due."""
        changes: dict[str, Any] = {"status": target.value, "updated_at": now}
        if action is Action.ACCEPT:
            changes |= await self._accepted(wo, now)
        elif action is Action.START:
            changes |= {"started_work_at": now}
        elif action is Action.PENDING_CUSTOMER:
            changes |= {"paused_since": now, **await self.clocks.remaining_at_pause(wo, now)}
        else:
            changes |= {f"sla.{c.value}.stopped_at": now for c in CLOCKS if clock_running(wo, c)}
            changes |= {"resolved_at": now, "resolution_code": code}
        evt = messages.technician_acted(wo, action, now, reason=reason, code=code)
        guard = Guard(round=wo.round, status=wo.status, technician_id=wo.technician_id, check_technician=True)
        if not await self.store.write_work_order(wo.ticket_id, guard, changes, [evt]):
            return False
        if action is Action.ACCEPT:
            await self.clocks.cancel(wo, SlaClock.FIRST_RESPONSE)
        elif action is Action.PENDING_CUSTOMER:
            for clock in CLOCKS:
                await self.clocks.cancel(wo, clock)
        elif action is Action.RESOLVE:
            for clock in CLOCKS:
                await self.clocks.cancel(wo, clock)
            await self.queues.capacity_freed(await self.capacity.release_holder(wo))
        return True

    async def _accepted(self, wo: WorkOrder, now: datetime) -> dict[str, Any]:
        """Return the changes of an accept: first response stops; resolution gets a timer if it had none."""
        changes: dict[str, Any] = {"accepted_at": now, "sla.first_response.stopped_at": now}
        resolution = dict(wo.sla["resolution"])
        if clock_running(wo, SlaClock.RESOLUTION) and not resolution.get("timer_id"):
            states = {SlaClock.RESOLUTION.value: resolution}
            if await arm_earliest(self.clocks.timers, ticket_id=wo.ticket_id, round_=wo.round, states=states):
                changes["sla.resolution.timer_id"] = resolution["timer_id"]
        return changes

    async def resume(self, wo: WorkOrder, now: datetime) -> bool:
        """End the customer pause and move the running clocks' due times (and their timers) by it."""
        start = cast(datetime, wo.paused_since)  # set while pending on the customer
        pause = {"start": start, "end": now}
        pauses = [*pauses_of({"pauses": wo.pauses}), (start, now)]
        changes = {"status": Status.IN_PROGRESS.value, "paused_since": None, "updated_at": now}
        # Re-plan with the current policy: a change made while paused applies from now on.
        changes |= await self.clocks.replan(wo, pauses, await self.store.cached_policy())
        guard = Guard(round=wo.round, status=Status.PENDING_CUSTOMER.value, **clocks_as_read(wo))
        ok = await self.store.write_work_order(
            wo.ticket_id, guard, changes, [messages.resumed(wo, now)], add_pause=pause
        )
        if ok:
            await self.clocks.retire(wo, changes)
        return ok

    # ------------------------------------------------------------------ ticket events

    async def customer_replied(self, ticket_id: str) -> None:
        wo = await self.store.load_work_order(ticket_id)
        if wo is not None and wo.status == Status.PENDING_CUSTOMER and not await self.resume(wo, now_utc()):
            raise RetryLater(f"work order {ticket_id} changed while resuming; decide again")

    async def priority_changed(self, ticket_id: str, priority: str) -> None:
        wo = await self.store.load_work_order(ticket_id)
        if wo is None or wo.status not in OPEN_STATUSES or wo.facts["priority"] == priority:
            return
        facts = {**wo.facts, "priority": priority}
        policy, _ = await self.store.policy()
        changes = await self.clocks.replan(wo, pauses_of(wo), policy, facts)
        changes |= {
            "facts.priority": priority,
            "priority_rank": PRIORITY_RANK[priority],
            "updated_at": now_utc(),
        }
        guard = Guard(round=wo.round, status=wo.status, **clocks_as_read(wo))
        if not await self.store.write_work_order(ticket_id, guard, changes):
            raise RetryLater(f"work order {ticket_id} changed while re-planning; decide again")
        await self.clocks.retire(wo, changes)

    async def ended(self, ticket_id: str, status: Status) -> None:
        """The ticket was cancelled or closed: stop its clocks and free its technician."""
        wo = await self.store.load_work_order(ticket_id)
        if wo is None or wo.status not in OPEN_STATUSES:
            return
        changes = {"status": status.value, "updated_at": now_utc(), "paused_since": None}
        if not await self.store.write_work_order(ticket_id, Guard(round=wo.round, status=wo.status), changes):
            # Accepted, resolved or escalated meanwhile: read again and end what is there now.
            raise RetryLater(f"work order {ticket_id} changed while ending; decide again")
        await self.store.dequeue(ticket_id)
        await self.store.unoffer(ticket_id)
        for clock in CLOCKS:  # by id: a query by group would scan on FerretDB
            await self.clocks.cancel(wo, clock)
        if wo.status in HOLDING_STATUSES:
            await self.queues.capacity_freed(await self.capacity.release_holder(wo))
