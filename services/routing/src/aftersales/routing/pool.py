"""The grab-order pool (抢单): a pooled grid offers a new work order to its eligible technicians instead of
dispatching it; unclaimed when its durable fallback timer fires (or declined by every eligible
technician) it falls back to automatic dispatch: assigned, or queued. The offer's entry in the pool index
and its timer are written before the work order (a lost write leaves a stale entry, dropped by reads,
and a timer that finds another offer and does nothing)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aftersales.routing import messages
from aftersales.routing.assignment import Candidate, Via, assigned_fields, need_of, queued_fields
from aftersales.routing.capacity import Capacity
from aftersales.routing.clocks import now_utc
from aftersales.routing.domain import Status, WorkOrder
from aftersales.routing.grids import GridDirectory, GridView
from aftersales.routing.metrics import POOL_OUTCOMES, WORK_ORDER_OUTCOMES, observe_assignment
from aftersales.routing.pool_rules import eligible
from aftersales.routing.queues import Queues
from aftersales.routing.store import Guard, RoutingStore, load_of, slot_key
from aftersales.routing.timers import POOL_FALLBACK_TIMER
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.errors import RetryLater
from aftersales.shared.timers import DurableTimers, Timer

log = logging.getLogger("aftersales.routing")


def fallback_timer_id(ticket_id: str, round_: int, offer_no: int) -> str:
    return f"pool:{ticket_id}:{round_}:{offer_no}"


@dataclass(frozen=True, slots=True)
class Offer:
    """An offer ready to be written with the work order: its fields and its event."""

    changes: dict[str, Any]
    event: CloudEvent
    eligible: list[str]


@dataclass(frozen=True, slots=True)
class Pool:
    """Offers of pooled grids and their fallback to automatic dispatch."""

    store: RoutingStore
    grids: GridDirectory
    capacity: Capacity
    queues: Queues
    timers: DurableTimers

    async def eligible(self, view: GridView, wo: WorkOrder) -> list[str]:
        """Return who may claim the work order now (technicians of its grid only)."""
        grid = view.grids.get(wo.grid_id)
        loads = [load_of(d) for d in await self.store.technicians_in([wo.grid_id])]
        return eligible(
            loads,
            wo,
            grid,
            surge_on=wo.grid_id in view.surge,
            now=now_utc(),
            silent_after_s=self.capacity.silent_after_s,
        )

    async def offer(
        self, view: GridView, wo: WorkOrder, now: datetime, *, offer_no: int, who: list[str] | None = None
    ) -> Offer:
        """Prepare offer `offer_no` of a work order in its grid's pool: arm its fallback timer and add its
        pool entry (both before the caller's write); return the fields and event to write."""
        grid = view.grids[wo.grid_id]
        assert grid.pool is not None
        who = await self.eligible(view, wo) if who is None else who
        fallback_at = now + timedelta(seconds=grid.pool.fallback_after_s)
        payload = {"ticket_id": wo.ticket_id, "round": wo.round, "offer_no": offer_no}
        timer = fallback_timer_id(wo.ticket_id, wo.round, offer_no)
        await self.timers.schedule(timer, POOL_FALLBACK_TIMER, fallback_at, payload, group=wo.ticket_id)
        await self.store.offer_entry(
            wo.ticket_id,
            grid_id=wo.grid_id,
            round_=wo.round,
            offer_no=offer_no,
            priority_rank=wo.priority_rank,
            offered_at=now,
        )
        changes = {
            "status": Status.OFFERED.value,
            "technician_id": None,
            "via": None,
            "queued_at": None,
            "offer_no": offer_no,
            "offered_at": now,
            "fallback_at": fallback_at,
            "declined": list(wo.declined),
        }
        evt = messages.offered(wo, now, offer_no=offer_no, fallback_at=fallback_at, eligible=len(who))
        return Offer(changes, evt, who)

    async def rearm_lost_fallback(self, offered: Mapping[str, Any]) -> bool:
        """Schedule again the fallback timer of a standing offer whose timer document is gone; True if it
        did. The timer is armed before the offer is written and retired after it ends, so it should exist
        while the offer stands; this is the reconciler's check that it does. A timer missing is confirmed
        on the work order as it is now: one that fired meanwhile has moved it on."""
        ticket_id, round_, offer_no = str(offered["_id"]), int(offered["round"]), int(offered["offer_no"])
        timer = fallback_timer_id(ticket_id, round_, offer_no)
        if await self.timers.get(timer) is not None:
            return False
        fresh = await self.store.work_order(ticket_id)
        if fresh is None or fresh["status"] != Status.OFFERED or fresh["round"] != round_:
            return False
        if fresh.get("offer_no") != offer_no:
            return False
        due = fresh.get("fallback_at") or now_utc()
        payload = {"ticket_id": ticket_id, "round": round_, "offer_no": offer_no}
        await self.timers.schedule(timer, POOL_FALLBACK_TIMER, due, payload, group=ticket_id)
        return True

    async def on_fallback(self, timer: Timer) -> None:
        """An offer's time ran out: dispatch it automatically unless it was claimed or moved meanwhile."""
        payload = timer.payload
        wo = await self.store.load_work_order(str(payload["ticket_id"]))
        if wo is None or wo.status != Status.OFFERED:
            return
        if wo.round != payload["round"] or wo.offer_no != payload["offer_no"]:
            return  # a stale timer: another round or offer
        await self.fall_back(wo, reason="nobody claimed it in time")

    async def fall_back(self, wo: WorkOrder, *, reason: str) -> bool:
        """Dispatch an offered work order automatically: to a technician who did not decline it, else to
        anyone, else its grid's queue. True if this call moved it; RetryLater if it lost a race to
        something that left it on offer."""
        view = await self.grids.view()
        key = slot_key(wo.ticket_id, wo.round)
        chosen = await self.capacity.reserve(view, need_of(wo, exclude=wo.declined), key)
        if chosen is None and wo.declined:
            chosen = await self.capacity.reserve(view, need_of(wo, exclude=()), key)
        now = now_utc()
        update, evt = self._fallback_write(wo, chosen, reason, now)
        if chosen is None:  # queue entry first: a lost write leaves a stale entry, which drains drop
            await self.store.enqueue(
                wo.ticket_id,
                grid_id=wo.grid_id,
                round_=wo.round,
                priority_rank=wo.priority_rank,
                queued_at=now,
            )
        guard = Guard(round=wo.round, status=Status.OFFERED.value, offer_no=wo.offer_no)
        if not await self.store.write_work_order(wo.ticket_id, guard, update, [evt]):
            if chosen is not None:
                await self.capacity.release(chosen[0].technician_id, key)
            fresh = await self.store.load_work_order(wo.ticket_id)
            if fresh is not None and fresh.status == Status.OFFERED and fresh.offer_no == wo.offer_no:
                raise RetryLater(f"the fallback of {wo.ticket_id} lost a race; decide again")
            return False  # claimed, moved or ended meanwhile: nothing to fall back
        await self.closed(wo)
        if chosen is not None:
            observe_assignment(chosen[1], (now - wo.started_at).total_seconds())
            POOL_OUTCOMES.labels("fallback_assigned").inc()
        else:
            WORK_ORDER_OUTCOMES.labels("queued").inc()
            POOL_OUTCOMES.labels("fallback_queued").inc()
            await self.queues.after_queued(wo.grid_id)
        log.info("pool offer fell back", extra={"ticket_id": wo.ticket_id, "reason": reason})
        return True

    @staticmethod
    def _fallback_write(
        wo: WorkOrder, chosen: tuple[Candidate, Via] | None, reason: str, now: datetime
    ) -> tuple[dict[str, Any], CloudEvent]:
        common = {"updated_at": now, "fallback_at": None}
        if chosen is not None:
            candidate, via = chosen
            evt = messages.assigned(
                wo.ticket_id,
                grid_id=wo.grid_id,
                round_=wo.round,
                facts=wo.facts,
                sla=wo.sla,
                candidate=candidate,
                via=via,
                now=now,
            )
            return {**assigned_fields(candidate, via, now), **common}, evt
        need = need_of(wo, exclude=())
        evt = messages.queued(wo.ticket_id, wo.grid_id, wo.round, now, reason=f"pool: {reason}", need=need)
        return {**queued_fields(now), **common}, evt

    async def closed(self, wo: WorkOrder) -> None:
        """The offer ended (claimed, fallen back, moved or the ticket ended): drop its entry and timer."""
        await self.store.unoffer(wo.ticket_id)
        if wo.offer_no:
            await self.timers.cancel(fallback_timer_id(wo.ticket_id, wo.round, wo.offer_no))
