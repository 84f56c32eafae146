"""A technician's side of the grab-order pool (抢单): list what he may claim, claim (the first claim
wins: one conditional write on the offered work order, after his slot is taken), decline, and return a
claimed work order to the pool. Crash-safe like every dispatch: slot first, then the work order; a slot
no work order holds is released by the slot reconciler."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from aftersales.routing import messages
from aftersales.routing.assignment import Candidate, assigned_fields, effective_capacity
from aftersales.routing.capacity import Capacity
from aftersales.routing.clocks import now_utc
from aftersales.routing.domain import ServiceGrid, Status, WorkOrder
from aftersales.routing.grids import GridDirectory
from aftersales.routing.metrics import POOL_OUTCOMES, observe_assignment
from aftersales.routing.pool import Pool
from aftersales.routing.pool_rules import NOT_FOR_HIM, REFUSAL_TEXT, Refusal, claim_refusal
from aftersales.routing.queues import Queues
from aftersales.routing.store import Guard, RoutingStore, load_of, slot_key, technician_of, work_order_of
from aftersales.shared.errors import Conflict, Forbidden, NotFound

RETURNABLE = (Status.ASSIGNED, Status.ACCEPTED, Status.IN_PROGRESS)
LIST_SCAN_FACTOR = 3  # pool entries read per item asked (some are not for him); bounded by the limit


@dataclass(frozen=True, slots=True)
class PoolClaims:
    """What a technician does with his grid's pool."""

    store: RoutingStore
    grids: GridDirectory
    capacity: Capacity
    queues: Queues
    pool: Pool

    async def offers_for(self, tech_id: str, *, limit: int) -> list[dict[str, Any]]:
        """Return the offered work orders the technician may claim now, priority first, then age."""
        doc = await self._technician(tech_id)
        view = await self.grids.view()
        grid = view.grids.get(str(doc["grid_id"]))
        if grid is None or grid.pool is None:
            return []
        out = []
        for wo_doc in await self.store.offered_docs(grid.id, limit * LIST_SCAN_FACTOR):
            if self._refusal(doc, work_order_of(wo_doc), grid, grid.id in view.surge) is None:
                out.append(wo_doc)
        return out[:limit]

    async def claim(self, ticket_id: str, tech_id: str) -> dict[str, Any]:
        """Claim an offered work order; return it. 409 if another claim won or he may not take it now."""
        wo, doc = await self._offered(ticket_id), await self._technician(tech_id)
        view = await self.grids.view()
        grid = view.grids.get(wo.grid_id)
        surge_on = wo.grid_id in view.surge
        refusal = self._refusal(doc, wo, grid, surge_on)
        if refusal is not None:
            text = f"work order {ticket_id} {REFUSAL_TEXT[refusal]}"
            raise Forbidden(text) if refusal in NOT_FOR_HIM else Conflict(text)
        tech = technician_of(doc)
        cap = effective_capacity(tech.capacity, grid, surge_on)
        key = slot_key(ticket_id, wo.round)
        reused = key in doc.get("active_ids", [])  # left by a crash after his earlier claim's reserve
        if not reused and not await self.store.reserve(tech.id, key, cap):
            raise Conflict(f"{tech_id} changed meanwhile (full or unavailable); try again")
        now = now_utc()
        candidate = Candidate(tech.id, tech.grid_id, tech.tier, tech.team_id, cap, 0, "pool", reused)
        update = {**assigned_fields(candidate, "pool", now), "updated_at": now, "fallback_at": None}
        events = [
            messages.claimed(wo, now, technician_id=tech.id),
            messages.assigned(
                ticket_id,
                grid_id=wo.grid_id,
                round_=wo.round,
                facts=wo.facts,
                sla=wo.sla,
                candidate=candidate,
                via="pool",
                now=now,
            ),
        ]
        guard = Guard(round=wo.round, status=Status.OFFERED.value)
        if not await self.store.write_work_order(ticket_id, guard, update, events):
            if not reused:
                await self.capacity.release(tech.id, key)
            raise Conflict(f"work order {ticket_id} was claimed or moved meanwhile")
        await self.pool.closed(wo)
        observe_assignment("pool", (now - wo.started_at).total_seconds())
        POOL_OUTCOMES.labels("claimed").inc()
        return await self._read(ticket_id)

    async def decline(self, ticket_id: str, tech_id: str, reason: str) -> dict[str, Any]:
        """Decline an offer: it is not offered to him any more; declined by every eligible technician,
        it falls back to automatic dispatch at once. Idempotent."""
        wo, doc = await self._offered(ticket_id), await self._technician(tech_id)
        if tech_id in wo.declined:
            return await self._read(ticket_id)
        view = await self.grids.view()
        grid = view.grids.get(wo.grid_id)
        refusal = self._refusal(doc, wo, grid, wo.grid_id in view.surge)
        if refusal is not None and refusal in NOT_FOR_HIM:
            raise Forbidden(f"work order {ticket_id} {REFUSAL_TEXT[refusal]}")
        still = [t for t in await self.pool.eligible(view, wo) if t != tech_id]
        now = now_utc()
        evt = messages.declined(wo, now, technician_id=tech_id, reason=reason, still_eligible=len(still))
        if not await self.store.decline_offer(
            ticket_id, round_=wo.round, offer_no=wo.offer_no, technician_id=tech_id, now=now, events=[evt]
        ):
            raise Conflict(f"work order {ticket_id} was claimed or moved meanwhile")
        POOL_OUTCOMES.labels("declined").inc()
        # Decide on the fresh work order: another decline may have landed meanwhile.
        fresh = await self.store.load_work_order(ticket_id)
        if fresh is not None and fresh.status == Status.OFFERED and not await self.pool.eligible(view, fresh):
            await self.pool.fall_back(fresh, reason="declined by every eligible technician")
        return await self._read(ticket_id)

    async def give_back(self, ticket_id: str, tech_id: str, reason: str) -> dict[str, Any]:
        """Return a claimed work order to the pool (only its holder): offered again, not to him, and his
        slot released; nobody else eligible, it falls back to automatic dispatch at once."""
        wo = await self.store.load_work_order(ticket_id)
        if wo is None:
            raise NotFound(f"work order {ticket_id} not found", field="ticket_id")
        if wo.technician_id != tech_id or not wo.holds_slot:
            raise Forbidden(f"work order {ticket_id} is not held by {tech_id}")
        if wo.status not in RETURNABLE:
            allowed = ", ".join(s.value for s in RETURNABLE)
            raise Conflict(f"cannot return a work order that is {wo.status}; allowed from: {allowed}")
        view = await self.grids.view()
        grid = view.grids.get(wo.grid_id)
        if grid is None or not grid.pools(wo.category, wo.priority):
            raise Conflict(f"grid {wo.grid_id} does not pool such work orders; hand it back instead")
        now = now_utc()
        again = replace(
            wo, status=Status.OFFERED, technician_id=None, declined=sorted({*wo.declined, tech_id})
        )
        offer = await self.pool.offer(view, again, now, offer_no=wo.offer_no + 1)
        guard = Guard(round=wo.round, status=wo.status, technician_id=tech_id, check_technician=True)
        events = [messages.returned(wo, now, reason=reason), offer.event]
        if not await self.store.write_work_order(
            ticket_id, guard, {**offer.changes, "updated_at": now}, events
        ):
            raise Conflict(f"work order {ticket_id} changed meanwhile; read it and try again")
        POOL_OUTCOMES.labels("returned").inc()
        await self.queues.capacity_freed(await self.capacity.release_holder(wo))
        if not offer.eligible:
            fresh = await self.store.load_work_order(ticket_id)
            if fresh is not None and fresh.status == Status.OFFERED:
                await self.pool.fall_back(fresh, reason="returned, and nobody else may claim it")
        return await self._read(ticket_id)

    def _refusal(
        self, doc: dict[str, Any], wo: WorkOrder, grid: ServiceGrid | None, surge_on: bool
    ) -> Refusal | None:
        return claim_refusal(
            load_of(doc),
            wo,
            grid,
            surge_on=surge_on,
            now=now_utc(),
            silent_after_s=self.capacity.silent_after_s,
        )

    async def _offered(self, ticket_id: str) -> WorkOrder:
        wo = await self.store.load_work_order(ticket_id)
        if wo is None:
            raise NotFound(f"work order {ticket_id} not found", field="ticket_id")
        if wo.status != Status.OFFERED:
            raise Conflict(f"work order {ticket_id} is {wo.status.value}, not on offer")
        return wo

    async def _technician(self, tech_id: str) -> dict[str, Any]:
        doc = await self.store.technician_doc(tech_id)
        if doc is None:
            raise Forbidden(f"{tech_id} is not a technician: only technicians use the pool")
        return doc

    async def _read(self, ticket_id: str) -> dict[str, Any]:
        doc = await self.store.work_order(ticket_id)
        assert doc is not None
        return doc
