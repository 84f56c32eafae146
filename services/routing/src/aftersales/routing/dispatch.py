"""Dispatch of a new round: turn a ticket round into a work order with a technician, an offer in its
grid's pool (抢单, see `pool`) or a place in the queue (see `queues`), its SLA clocks planned and
armed. One conditional write with its events; a queue
entry is written ahead of its work order."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from aftersales.routing import messages
from aftersales.routing.assignment import (
    Candidate,
    Via,
    WorkNeed,
    assigned_fields,
    queued_fields,
)
from aftersales.routing.capacity import Capacity
from aftersales.routing.clocks import CLOCKS, arm_earliest, now_utc, plan_state
from aftersales.routing.domain import UNROUTED, ServiceGrid, Status, WorkOrder, match_grid, new_round_fields
from aftersales.routing.grids import GridDirectory, GridView
from aftersales.routing.metrics import POOL_OUTCOMES, WORK_ORDER_OUTCOMES, observe_assignment
from aftersales.routing.pool import Offer, Pool
from aftersales.routing.queues import Queues
from aftersales.routing.store import Guard, RoutingStore, slot_key, work_order_of
from aftersales.shared.calendar import BusinessCalendar
from aftersales.shared.contracts.common import CustomerTier, Priority
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.timers import DurableTimers

log = logging.getLogger("aftersales.routing")


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A ticket round becomes a work order, assigned or queued."""

    store: RoutingStore
    grids: GridDirectory
    capacity: Capacity
    queues: Queues
    timers: DurableTimers
    pool: Pool

    # ------------------------------------------------------------------ a new round

    async def dispatch_round(
        self,
        *,
        facts: Mapping[str, Any],
        started_at: datetime,
        round_: int,
        previous_technician_id: str | None,
    ) -> None:
        """Create the work order of a ticket's round, assigned or queued; idempotent per round."""
        ticket_id = str(facts["ticket_id"])
        # Round 1 goes straight to an insert (a duplicate key tells a redelivery); reopens read first.
        existing = await self.store.load_work_order(ticket_id) if round_ > 1 else None
        if existing is not None and existing.round >= round_:
            return  # this round was dispatched already (redelivery)
        view = await self.grids.view()
        grid = match_grid(view.grids.values(), facts["region_code"], facts["device_type"])
        grid_id = grid.id if grid else UNROUTED
        sla = await self._plan_clocks(ticket_id, round_, facts, started_at, view.calendar_of(grid_id))
        now = now_utc()
        base = new_round_fields(
            round_=round_,
            grid_id=grid_id,
            facts=facts,
            started_at=started_at,
            sla=sla,
            previous_technician_id=previous_technician_id,
            now=now,
        )
        offer = await self._offer(view, grid, {"_id": ticket_id, **base}, now)
        chosen = None
        if offer is not None:
            base.update(offer.changes)
            events = [offer.event]
        else:
            chosen, events = await self._assign_or_queue(view, grid, base, previous_technician_id, now)
        if await self._write_round(
            ticket_id, base, events, existing, chosen, queue=offer is None and not chosen
        ):
            if offer is not None:
                WORK_ORDER_OUTCOMES.labels("offered").inc()
                POOL_OUTCOMES.labels("offered").inc()
            else:
                await self._after_round(ticket_id, grid, existing, chosen, started_at, now)

    async def _offer(
        self, view: GridView, grid: ServiceGrid | None, doc: Mapping[str, Any], now: datetime
    ) -> Offer | None:
        """Offer the round in its grid's pool (抢单) if the grid pools it and someone may claim it now."""
        if grid is None or not grid.pools(doc["facts"]["category"], doc["facts"]["priority"]):
            return None
        wo = replace(work_order_of({**doc, "status": Status.OFFERED.value}), offer_no=1)
        who = await self.pool.eligible(view, wo)
        if not who:
            return None  # nobody to claim it: automatic dispatch at once
        return await self.pool.offer(view, wo, now, offer_no=1, who=who)

    async def _assign_or_queue(
        self,
        view: GridView,
        grid: ServiceGrid | None,
        base: Mapping[str, Any],
        previous_technician_id: str | None,
        now: datetime,
    ) -> tuple[tuple[Candidate, Via] | None, list[CloudEvent]]:
        """Take a technician's slot for the round (or none); return him and the round's event."""
        facts, ticket_id, round_ = base["facts"], str(base["facts"]["ticket_id"]), int(base["round"])
        key = slot_key(ticket_id, round_)
        need = WorkNeed(base["grid_id"], facts["device_type"], facts["category"], facts["priority"])
        chosen = (
            await self.capacity.reserve(view, need, key, previous_technician_id, reuse_held=True)
            if grid
            else None
        )
        if chosen is not None:
            evt = messages.assigned(
                ticket_id,
                grid_id=base["grid_id"],
                round_=round_,
                facts=facts,
                sla=base["sla"],
                candidate=chosen[0],
                via=chosen[1],
                now=now,
            )
            return chosen, [evt]
        reason = _queued_reason(grid, facts)
        return None, [messages.queued(ticket_id, base["grid_id"], round_, now, reason=reason, need=need)]

    async def _plan_clocks(
        self,
        ticket_id: str,
        round_: int,
        facts: Mapping[str, Any],
        started_at: datetime,
        calendar: BusinessCalendar,
    ) -> dict[str, dict[str, Any]]:
        """Plan both SLA clocks of a new round and arm the earliest threshold (before the write)."""
        policy = await self.store.cached_policy()
        priority, tier = Priority(facts["priority"]), CustomerTier(facts.get("customer_tier", "standard"))
        sla = {
            clock.value: plan_state(
                started_at=started_at,
                target_minutes=policy.minutes(clock, priority, tier),
                calendar=calendar,
                pauses=[],
                fired_pct=[],
                generation=0,
            )
            for clock in CLOCKS
        }
        await arm_earliest(self.timers, ticket_id=ticket_id, round_=round_, states=sla)
        return sla

    async def _write_round(
        self,
        ticket_id: str,
        base: dict[str, Any],
        events: list[CloudEvent],
        existing: WorkOrder | None,
        chosen: tuple[Candidate, Via] | None,
        *,
        queue: bool,
    ) -> bool:
        """Write the round's work order (the queue entry first); give back a slot if it was not written."""
        if chosen is not None:
            base.update(assigned_fields(chosen[0], chosen[1], base["updated_at"]))
        elif queue:
            base.update(queued_fields(base["updated_at"]))
        if queue:  # queue entry first: a crash leaves at most a stale entry, which drains drop
            await self.store.enqueue(
                ticket_id,
                grid_id=base["grid_id"],
                round_=base["round"],
                priority_rank=base["priority_rank"],
                queued_at=base["queued_at"],
            )
        if existing is None:
            written = await self.store.insert_work_order({"_id": ticket_id, **base}, events)
        else:
            await self.capacity.release_holder(existing)
            written = await self.store.write_work_order(ticket_id, Guard(round=existing.round), base, events)
        if not written and chosen is not None and not chosen[0].reused:
            # Dispatched before (a redelivery, or another replica meanwhile): give back a slot we took now.
            await self.capacity.release(chosen[0].technician_id, slot_key(ticket_id, base["round"]))
        return written

    async def _after_round(
        self,
        ticket_id: str,
        grid: ServiceGrid | None,
        existing: WorkOrder | None,
        chosen: tuple[Candidate, Via] | None,
        started_at: datetime,
        now: datetime,
    ) -> None:
        if chosen is not None:
            if existing is not None and existing.status == Status.QUEUED:
                await self.store.dequeue(ticket_id)
            observe_assignment(chosen[1], (now - started_at).total_seconds())
        else:
            WORK_ORDER_OUTCOMES.labels("queued").inc()
            if grid is not None:
                await self.queues.after_queued(grid.id)


def _queued_reason(grid: ServiceGrid | None, facts: Mapping[str, Any]) -> str:
    if grid:
        return "no capacity in the grid or its neighbours"
    return f"no grid covers region {facts['region_code']} for device type {facts['device_type']}"
