"""The routing service: its parts wired together (grids, capacity, dispatch, hand-over, SLA clocks,
work orders, the desk's dispatch by hand, technicians' availability), the ticket events it reacts to,
housekeeping, and the administration of grids, technicians and the SLA policy."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aftersales.routing.assignment import DEFAULT_SILENT_AFTER_S
from aftersales.routing.availability import Availability
from aftersales.routing.capacity import Capacity, SlotAudit
from aftersales.routing.clocks import rearm_lost
from aftersales.routing.desk import Desk
from aftersales.routing.dispatch import Dispatch
from aftersales.routing.domain import (
    PlanningFinding,
    ServiceGrid,
    Status,
    Technician,
    WorkOrder,
    grid_loads,
    plan_grids,
)
from aftersales.routing.field_pauses import FieldPauses
from aftersales.routing.grids import GridDirectory
from aftersales.routing.handover import Handover
from aftersales.routing.metrics import POOL_FALLBACKS_REARMED, SLA_TIMERS_REARMED
from aftersales.routing.pool import Pool
from aftersales.routing.pool_claims import PoolClaims
from aftersales.routing.queues import Queues
from aftersales.routing.sla import SlaPolicy
from aftersales.routing.sla_clocks import SlaClocks
from aftersales.routing.store import RoutingStore, grid_of, work_order_of
from aftersales.routing.unrouted import Unrouted
from aftersales.routing.work_orders import WorkOrders
from aftersales.shared.contracts.events import (
    TicketCancelled,
    TicketClosed,
    TicketCreated,
    TicketFacts,
    TicketReopened,
    TicketUpdated,
)
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.errors import InvalidRequest, NotFound
from aftersales.shared.timers import DurableTimers

FACT_FIELDS = frozenset(TicketFacts.model_fields)
log = logging.getLogger("aftersales.routing")


class RoutingService:
    def __init__(
        self,
        store: RoutingStore,
        timers: DurableTimers,
        *,
        silent_after_s: float = DEFAULT_SILENT_AFTER_S,
        unrouted_supervisor_id: str = "unrouted-desk",
    ) -> None:
        self.store = store
        self.timers = timers
        self.grids = GridDirectory(store)
        self.capacity = Capacity(store, silent_after_s)
        self.slot_audit = SlotAudit()
        self.queues = Queues(store, self.grids, self.capacity)
        self.pool = Pool(store, self.grids, self.capacity, self.queues, timers)
        self.claims = PoolClaims(store, self.grids, self.capacity, self.queues, self.pool)
        self.dispatch = Dispatch(store, self.grids, self.capacity, self.queues, timers, self.pool)
        self.handover = Handover(store, self.grids, self.capacity, self.queues, unrouted_supervisor_id)
        self.clocks = SlaClocks(store, self.grids, timers, self.handover)
        self.work_orders = WorkOrders(store, self.capacity, self.queues, self.handover, self.clocks)
        self.field = FieldPauses(store, self.grids, self.clocks)
        self.unrouted = Unrouted(store, self.clocks)
        self.desk = Desk(store, self.grids, self.capacity, self.queues)
        self.availability = Availability(store, self.grids, self.queues, silent_after_s)

    # ------------------------------------------------------------------ ticket events (idempotent)

    async def on_ticket_created(self, model: TicketCreated, event: CloudEvent) -> None:
        await self.dispatch.dispatch_round(
            facts=model.model_dump(mode="json", include=set(FACT_FIELDS)),
            started_at=model.created_at,
            round_=1,
            previous_technician_id=None,
        )

    async def on_ticket_reopened(self, model: TicketReopened, event: CloudEvent) -> None:
        existing = await self.store.load_work_order(model.ticket_id)
        previous = model.previous_technician_id or (existing.technician_id if existing else None)
        await self.dispatch.dispatch_round(
            facts=model.model_dump(mode="json", include=set(FACT_FIELDS)),
            started_at=model.reopened_at,
            round_=model.reopen_count + 1,
            previous_technician_id=previous,
        )

    async def on_ticket_updated(self, model: TicketUpdated, event: CloudEvent) -> None:
        if model.change == "customer_replied":
            await self.work_orders.customer_replied(model.ticket_id)
        elif model.change == "priority_changed" and model.priority is not None:
            await self.work_orders.priority_changed(model.ticket_id, model.priority.value)

    async def on_ticket_cancelled(self, model: TicketCancelled, event: CloudEvent) -> None:
        await self.work_orders.ended(model.ticket_id, Status.CANCELLED)

    async def on_ticket_closed(self, model: TicketClosed, event: CloudEvent) -> None:
        await self.work_orders.ended(model.ticket_id, Status.CLOSED)

    # ------------------------------------------------------------------ housekeeping

    async def housekeeping(self) -> None:
        """Refresh the gauges, sweep every queue (a release may have raced a queueing) and flag
        technicians whose client went silent."""
        await self.queues.refresh_gauges()
        await self.queues.sweep_queues()
        await self.availability.flag_silent()

    async def reap_slots(self, *, grace_s: float = 60.0) -> int:
        """Release slots no open work order holds, then drain the queues they can serve; return how many.
        Which slots are checked is `slot_audit`'s: the new ones, or all of them on evidence."""
        full = self.slot_audit.begin()
        check = self._rearm_lost if full and self.slot_audit.check_timers else None
        try:
            reaped = await self.capacity.reap_slots(self.slot_audit, grace_s=grace_s, check=check)
            if check is not None:  # queued and offered work orders hold no slot: checked here
                await self._check_unheld(check)
        except BaseException:
            self.slot_audit.failed()
            raise
        self.slot_audit.done()
        for grid_id in reaped.grids:
            await self.queues.capacity_freed(grid_id)
        return reaped.released

    async def _check_unheld(self, check: Callable[[WorkOrder], Awaitable[None]]) -> None:
        """The timers of the work orders no slot leads to: queued ones, and pool offers (SLA timers and
        the offer's fallback timer)."""
        for wo in await self.store.queued_everywhere():
            await check(wo)
        for offered in await self.store.offered_everywhere():
            await check(work_order_of(offered))
            if await self.pool.rearm_lost_fallback(offered):
                POOL_FALLBACKS_REARMED.inc()
                log.warning("scheduled a lost pool fallback timer again", extra={"ticket_id": offered["_id"]})

    async def _rearm_lost(self, wo: WorkOrder) -> None:
        for tid in await rearm_lost(self.timers, wo, self.store.load_work_order):
            SLA_TIMERS_REARMED.inc()
            log.warning("scheduled a lost SLA timer again", extra={"ticket_id": wo.ticket_id, "timer": tid})

    # ------------------------------------------------------------------ administration

    async def put_grid(self, grid: ServiceGrid) -> tuple[dict[str, Any], bool]:
        """Create or replace a grid; re-plan its open clocks if its calendar changed, move the unrouted
        work orders it now covers into it, then serve its queue. Return the stored grid and whether new."""
        known = await self.store.grid_docs(fresh=True)
        unknown = [n for n in grid.neighbours if n not in known and n != grid.id]
        if unknown:
            raise InvalidRequest(f"unknown neighbour grid(s): {', '.join(unknown)}", field="neighbours")
        if grid.id in grid.neighbours:
            raise InvalidRequest("a grid cannot be its own neighbour", field="neighbours")
        before = known.get(grid.id)
        doc, created = await self.store.put_grid(grid)
        if before is not None and grid_of(before).calendar != grid.calendar:
            await self.clocks.replan_open(grid_id=grid.id)
        view = await self.grids.view(fresh=True)
        for reached in (await self.unrouted.reroute(view)) - {grid.id}:
            await self.queues.drain(reached, view)
        await self.queues.drain(grid.id, view)
        return doc, created

    async def put_technician(self, tech: Technician) -> tuple[dict[str, Any], bool]:
        """Create or replace a technician, then serve his grid's queue; return him and whether new."""
        grid = await self.store.grid_doc(tech.grid_id)
        if grid is None:
            raise InvalidRequest(f"unknown grid {tech.grid_id}", field="grid_id")
        if tech.team_id is not None and tech.team_id not in [t.id for t in grid_of(grid).teams]:
            raise InvalidRequest(f"grid {tech.grid_id} has no team {tech.team_id}", field="team_id")
        doc, created = await self.store.put_technician(tech)
        await self.queues.capacity_freed(tech.grid_id)  # more capacity or back on duty: serve the queue
        return doc, created

    async def put_policy(self, policy: SlaPolicy) -> tuple[int, int]:
        """Replace the SLA policy and re-plan open clocks; return its version and how many re-planned."""
        version = await self.store.put_policy(policy)
        return version, await self.clocks.replan_open(policy=policy)

    async def switch_surge(self, grid_id: str, *, on: bool) -> bool:
        """A supervisor switches surge mode; True if it changed."""
        if await self.store.grid_doc(grid_id) is None:
            raise NotFound(f"grid {grid_id} not found", field="grid_id")
        backlog = await self.store.queue_length(grid_id)
        return await self.queues.switch_surge(grid_id, on=on, trigger="supervisor", backlog=backlog)

    async def grid_planning(self, threshold: float) -> list[PlanningFinding]:
        """Return the grids whose open work orders per on-duty technician exceed `threshold`."""
        view = await self.grids.view(fresh=True)
        counts = await self.store.open_by_grid_and_region()
        on_duty: dict[str, int] = {}
        for doc in await self.store.technician_docs():
            if doc.get("on_duty", True):
                on_duty[doc["grid_id"]] = on_duty.get(doc["grid_id"], 0) + 1
        return plan_grids(grid_loads(view.grids, counts, on_duty), threshold)
