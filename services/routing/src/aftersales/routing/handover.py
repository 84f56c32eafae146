"""Moving a work order between technicians: escalation (to tier 2, else the grid supervisor) and the
technician handing it back (re-dispatch without him, else the queue)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aftersales.routing import messages
from aftersales.routing.assignment import assigned_fields, need_of, queued_fields
from aftersales.routing.capacity import Capacity
from aftersales.routing.domain import ServiceGrid, Status, WorkOrder
from aftersales.routing.grids import GridDirectory
from aftersales.routing.metrics import ESCALATIONS
from aftersales.routing.queues import Queues
from aftersales.routing.store import Guard, RoutingStore, slot_key


@dataclass(frozen=True, slots=True)
class Handover:
    """Escalation and hand-back: a work order moves to another technician or the queue."""

    store: RoutingStore
    grids: GridDirectory
    capacity: Capacity
    queues: Queues
    unrouted_supervisor_id: str = "unrouted-desk"  # a breach nobody else supervises goes to this desk

    async def escalate(self, wo: WorkOrder, *, reason: str, now: datetime) -> str:
        """Escalate: to a tier-2 technician of the grid with capacity, else to the grid supervisor."""
        ticket_id, round_ = wo.ticket_id, wo.round
        view = await self.grids.view()
        key = slot_key(ticket_id, round_)
        from_tech = wo.technician_id
        chosen = None
        if wo.tier != 2 and wo.escalation_level != "tier2" and wo.grid_id in view.grids:
            need = need_of(wo, min_tier=2, exclude=[from_tech] if from_tech else [])
            chosen = await self.capacity.reserve(view, need, key, home_only=True)
        grid = view.grids.get(wo.grid_id)
        if chosen is not None:
            level = "tier2"
            update: dict[str, Any] = {
                **assigned_fields(chosen[0], "direct", now),
                "escalation_level": level,
                "updated_at": now,
            }
            update["via"] = "queue" if wo.status == Status.QUEUED else wo.via
        else:
            level = "supervisor"
            update = {"escalation_level": level, "updated_at": now}
        update["escalation_due"] = False
        evt = messages.escalated(
            wo,
            now,
            level=level,
            reason=reason,
            to_technician_id=chosen[0].technician_id if chosen else None,
            supervisor_id=self._supervisor(grid) if level == "supervisor" else None,
        )
        guard = Guard(round=round_, status=wo.status, technician_id=from_tech, check_technician=True)
        ok = await self.store.write_work_order(ticket_id, guard, update, [evt])
        if chosen is not None:
            # The new technician holds the same slot key in his own document; the old one lets go.
            if not ok:
                await self.capacity.release(chosen[0].technician_id, key)
                return "conflict"
            if wo.status == Status.QUEUED:
                await self.store.dequeue(ticket_id)
            elif wo.status == Status.OFFERED:
                await self.store.unoffer(ticket_id)  # its fallback timer finds it assigned: no-op
            await self.queues.capacity_freed(await self.capacity.release_holder(wo))
        if ok:
            ESCALATIONS.labels(level, reason).inc()
        return level if ok else "conflict"

    def _supervisor(self, grid: ServiceGrid | None) -> str:
        """Return who supervises an escalation: the grid's supervisor, else (an unrouted work order, or a
        grid without one) the configured fallback supervisor, never nobody."""
        return grid.supervisor_id if grid and grid.supervisor_id else self.unrouted_supervisor_id

    async def hand_back(self, wo: WorkOrder, *, reason: str, now: datetime) -> str:
        """The technician returns the work order: free his slot and dispatch it again without him."""
        ticket_id, round_ = wo.ticket_id, wo.round
        from_tech = str(wo.technician_id)
        exclude = sorted({*wo.exclude, from_tech})
        view = await self.grids.view()
        need = need_of(wo, exclude=exclude)
        key = slot_key(ticket_id, round_)
        chosen = await self.capacity.reserve(view, need, key)
        guard = Guard(round=round_, status=wo.status, technician_id=from_tech, check_technician=True)
        if chosen is not None:
            candidate, via = chosen
            update = {**assigned_fields(candidate, via, now), "exclude": exclude, "updated_at": now}
            evt = messages.reassigned(wo, now, to_technician_id=candidate.technician_id, reason=reason)
            outcome = "reassigned"
        else:
            update = {**queued_fields(now), "exclude": exclude, "updated_at": now}
            evt = messages.queued(
                ticket_id, wo.grid_id, round_, now, reason=f"handed back: {reason}", need=need
            )
            outcome = "queued"
            # Queue entry first: a crash leaves at most a stale entry, which drains drop.
            await self.store.enqueue(
                ticket_id, grid_id=wo.grid_id, round_=round_, priority_rank=wo.priority_rank, queued_at=now
            )
        if not await self.store.write_work_order(ticket_id, guard, update, [evt]):
            if chosen is not None:
                await self.capacity.release(chosen[0].technician_id, key)
            return "conflict"
        await self.queues.capacity_freed(await self.capacity.release_holder(wo))
        return outcome
