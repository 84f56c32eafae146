"""Unrouted work orders: a ticket whose region no grid covers waits in the queue index under the grid id
`unrouted` (a small index, keyed by `_id`); when a grid that covers it is put, it moves there (its SLA
clocks re-planned on that grid's calendar) and that grid's queue serves it. Its breach, meanwhile,
escalates to the configured fallback supervisor (see `handover`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from aftersales.routing import messages
from aftersales.routing.assignment import need_of
from aftersales.routing.clocks import now_utc, pauses_of
from aftersales.routing.domain import UNROUTED, Status, WorkOrder, match_grid
from aftersales.routing.grids import GridView
from aftersales.routing.sla_clocks import SlaClocks, clocks_as_read
from aftersales.routing.store import Guard, RoutingStore

log = logging.getLogger("aftersales.routing")
REROUTE_BATCH = 1000  # unrouted work orders looked at per grid change (the rest on the next one)


@dataclass(frozen=True, slots=True)
class Unrouted:
    """Moving unrouted work orders to a grid that now covers them."""

    store: RoutingStore
    clocks: SlaClocks

    async def reroute(self, view: GridView) -> set[str]:
        """Move every unrouted work order some grid now covers to that grid; return the grids it reached."""
        reached: set[str] = set()
        for ticket_id in await self.store.queued_ids(UNROUTED, REROUTE_BATCH):
            wo = await self.store.load_work_order(ticket_id)
            if wo is None or wo.grid_id != UNROUTED or wo.status != Status.QUEUED:
                continue  # a stale entry: the queue's own reads drop it
            grid = match_grid(view.grids.values(), str(wo.facts["region_code"]), str(wo.facts["device_type"]))
            if grid is not None and await self._move(wo, grid.id):
                reached.add(grid.id)
        return reached

    async def _move(self, wo: WorkOrder, grid_id: str) -> bool:
        """Move one queued unrouted work order to `grid_id`; False if it changed meanwhile."""
        moved = replace(wo, grid_id=grid_id)
        changes = await self.clocks.replan(moved, pauses_of(wo))  # on the new grid's calendar
        now = now_utc()
        changes |= {"grid_id": grid_id, "updated_at": now}
        reason = f"re-routed: grid {grid_id} now covers region {wo.facts['region_code']}"
        evt = messages.queued(
            wo.ticket_id, grid_id, wo.round, now, reason=reason, need=need_of(moved, exclude=())
        )
        # Queue entry first: if the write loses, the entry follows the work order back (store.queued).
        await self.store.enqueue(
            wo.ticket_id, grid_id=grid_id, round_=wo.round, priority_rank=wo.priority_rank, queued_at=now
        )
        guard = Guard(round=wo.round, status=Status.QUEUED.value, grid_id=UNROUTED, **clocks_as_read(wo))
        if not await self.store.write_work_order(wo.ticket_id, guard, changes, [evt]):
            return False
        await self.clocks.retire(wo, changes)
        log.info("unrouted work order re-routed", extra={"ticket_id": wo.ticket_id, "grid": grid_id})
        return True
