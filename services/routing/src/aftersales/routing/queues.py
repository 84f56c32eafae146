"""Queued work orders and surge: drain a grid's queue (priority, then age) when capacity frees, switch
surge by backlog (or by a supervisor), and keep the queue and load gauges."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aftersales.routing import messages
from aftersales.routing.assignment import (
    Via,
    assigned_fields,
    backlog_surge_change,
    effective_capacity,
    grid_rings,
    need_of,
)
from aftersales.routing.capacity import Capacity
from aftersales.routing.clocks import now_utc
from aftersales.routing.domain import Status, WorkOrder
from aftersales.routing.grids import GridDirectory, GridView
from aftersales.routing.metrics import GRID_LOAD, QUEUE_LENGTH, observe_assignment
from aftersales.routing.store import Guard, RoutingStore, slot_key

log = logging.getLogger("aftersales.routing")


@dataclass(frozen=True, slots=True)
class Queues:
    """Grids' queues and surge mode."""

    store: RoutingStore
    grids: GridDirectory
    capacity: Capacity

    # ------------------------------------------------------------------ capacity freed: drain queues

    async def capacity_freed(self, tech_grid_id: str | None) -> None:
        """Drain the queues a technician of `tech_grid_id` can serve: his grid, then its neighbours."""
        if not tech_grid_id:
            return
        view = await self.grids.view()
        rings = grid_rings(tech_grid_id, view.grids, tech_grid_id in view.surge)
        for gid in [g for ring in rings[:2] for g in ring]:
            await self.drain(gid, view)

    async def drain(self, grid_id: str, view: GridView | None = None, *, limit: int = 25) -> int:
        """Assign queued work orders of a grid by priority then age while someone has capacity."""
        view = view or await self.grids.view()
        assigned = misses = 0
        for wo in await self.store.queued(grid_id, limit):
            outcome = await self._assign_queued(wo, view)
            if outcome is None:
                misses += 1
                if misses >= 3:
                    break
                continue
            assigned += int(outcome)
        await self.check_surge(grid_id, view)
        return assigned

    async def _assign_queued(self, wo: WorkOrder, view: GridView) -> bool | None:
        """Assign one queued work order: None when nobody had a slot, False when it moved meanwhile."""
        need = need_of(wo, exclude=wo.exclude)
        key = slot_key(wo.ticket_id, wo.round)
        chosen = await self.capacity.reserve(view, need, key)
        if chosen is None:
            return None
        candidate = chosen[0]
        now = now_utc()
        queued_via: Via = "queue"
        update = assigned_fields(candidate, queued_via, now)
        update["updated_at"] = now
        evt = messages.assigned(
            wo.ticket_id,
            grid_id=wo.grid_id,
            round_=wo.round,
            facts=wo.facts,
            sla=wo.sla,
            candidate=candidate,
            via=queued_via,
            now=now,
        )
        guard = Guard(round=wo.round, status=Status.QUEUED.value)
        if not await self.store.write_work_order(wo.ticket_id, guard, update, [evt]):
            await self.capacity.release(candidate.technician_id, key)
            return False
        await self.store.dequeue(wo.ticket_id)
        observe_assignment(queued_via, (now - wo.started_at).total_seconds())
        return True

    async def after_queued(self, grid_id: str) -> None:
        """A work order was queued: switch surge on if the backlog passed the threshold, and drain once
        (capacity may have freed between our look and our write)."""
        view = await self.grids.view()
        if await self.check_surge(grid_id, view):
            view = await self.grids.view(fresh=True)
        await self.drain(grid_id, view, limit=5)

    async def sweep_queues(self) -> None:
        """Safety net: drain every grid's queue (a release may have raced a queueing elsewhere)."""
        view = await self.grids.view()
        for gid, n in (await self.store.queue_lengths()).items():
            if n and gid in view.grids:
                await self.drain(gid, view)

    # ------------------------------------------------------------------ surge

    async def check_surge(self, grid_id: str, view: GridView) -> bool:
        """Switch surge on or off by the backlog (automatic grids only); return True if it changed.
        Only an automatic grid's queue is counted here: a count reads the whole queue index on the
        embedded store, and this runs at every queueing and drain (the queue gauge of every grid is
        kept by the housekeeping pass)."""
        grid = view.grids.get(grid_id)
        if grid is None:
            return False
        surge_on = grid_id in view.surge
        automatic = grid.surge.automatic and view.surge_trigger.get(grid_id) != "supervisor"
        if not automatic:
            return False
        queued = await self.store.queue_length(grid_id)
        QUEUE_LENGTH.labels(grid_id).set(queued)
        change = backlog_surge_change(
            surge_on=surge_on, automatic=automatic, queued=queued, threshold=grid.surge.backlog_threshold
        )
        if change is None:
            return False
        return await self.switch_surge(grid_id, on=change, trigger="backlog", backlog=queued)

    async def switch_surge(self, grid_id: str, *, on: bool, trigger: str, backlog: int) -> bool:
        """Switch a grid's surge mode; True if it changed (then, switched on, its queue drains)."""
        evt = messages.surge_switched(grid_id, on=on, trigger=trigger, backlog=backlog, now=now_utc())
        changed = await self.store.set_surge(grid_id, on=on, trigger=trigger, events=[evt])
        if changed:
            log.info("surge switched", extra={"grid": grid_id, "on": on, "trigger": trigger})
            if on:
                await self.drain(grid_id, await self.grids.view(fresh=True))
        return changed

    # ------------------------------------------------------------------ gauges

    async def refresh_gauges(self) -> None:
        view = await self.grids.view()
        lengths = await self.store.queue_lengths()
        for gid in view.grids:
            QUEUE_LENGTH.labels(gid).set(lengths.get(gid, 0))
        totals: dict[str, list[int]] = {}
        for doc in await self.store.technician_docs():
            if not doc.get("on_duty", True):
                continue
            cap = effective_capacity(
                int(doc.get("capacity", 0)), view.grids.get(doc["grid_id"]), doc["grid_id"] in view.surge
            )
            t = totals.setdefault(doc["grid_id"], [0, 0])
            t[0] += int(doc.get("active_work_orders", 0))
            t[1] += cap
        for gid, (active, cap) in totals.items():
            GRID_LOAD.labels(gid).set(active / cap if cap else 0.0)
