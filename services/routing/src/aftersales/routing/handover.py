"""Moving a work order between technicians: escalation (to tier 2, else the grid supervisor) and the
technician handing it back (re-dispatch without him, else the queue)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aftersales.routing.assignment import need_of
from aftersales.routing.domain import Status
from aftersales.routing.router import ESCALATIONS, Router, event
from aftersales.routing.store import slot_key
from aftersales.shared.contracts.events import WorkOrderEscalated, WorkOrderQueued, WorkOrderReassigned


async def escalate(router: Router, wo: Mapping[str, Any], *, reason: str, now: datetime) -> str:
    """Escalate: to a tier-2 technician of the grid with capacity, else to the grid supervisor."""
    ticket_id, round_ = wo["_id"], wo["round"]
    view = await router.view()
    key = slot_key(ticket_id, round_)
    from_tech = wo.get("technician_id")
    chosen = None
    if wo.get("tier") != 2 and wo.get("escalation_level") != "tier2" and wo["grid_id"] in view.grids:
        need = need_of(wo, min_tier=2, exclude=[from_tech] if from_tech else [])
        chosen = await router._reserve(view, need, key, home_only=True)
    grid = view.grids.get(wo["grid_id"])
    if chosen is not None:
        candidate, _ = chosen
        level = "tier2"
        update: dict[str, Any] = {
            **router._holder_fields(candidate, "direct", now),
            "escalation_level": level,
            "updated_at": now,
        }
        update["via"] = wo.get("via")
        if wo.get("status") == Status.QUEUED:
            update["via"] = "queue"
    else:
        level = "supervisor"
        update = {"escalation_level": level, "updated_at": now}
    update["escalation_due"] = False
    data = WorkOrderEscalated(
        ticket_id=ticket_id,
        grid_id=wo["grid_id"],
        round=round_,
        occurred_at=now,
        level=level,  # type: ignore[arg-type]
        reason=reason,  # type: ignore[arg-type]
        from_technician_id=from_tech,
        to_technician_id=chosen[0].technician_id if chosen else None,
        supervisor_id=grid.supervisor_id if grid and level == "supervisor" else None,
    )
    ok = await router.store.update_work_order(
        ticket_id,
        {"round": round_, "status": wo["status"], "technician_id": from_tech},
        {"$set": update},
        [event(data, ticket_id)],
    )
    if chosen is not None:
        # The new technician holds the same slot key in his own document; the old one lets go.
        if not ok:
            await router.store.release(chosen[0].technician_id, key)
            return "conflict"
        if wo.get("status") == Status.QUEUED:
            await router.store.dequeue(ticket_id)
        freed = await router._release_holder(wo)
        await router.capacity_freed(freed)
    if ok:
        ESCALATIONS.labels(level, reason).inc()
    return level if ok else "conflict"


async def hand_back(router: Router, wo: Mapping[str, Any], *, reason: str, now: datetime) -> str:
    """The technician returns the work order: free his slot and dispatch it again without him."""
    ticket_id, round_ = wo["_id"], wo["round"]
    from_tech = str(wo["technician_id"])
    exclude = sorted({*wo.get("exclude", []), from_tech})
    view = await router.view()
    need = need_of(wo, exclude=exclude)
    key = slot_key(ticket_id, round_)
    chosen = await router._reserve(view, need, key)
    guard = {"round": round_, "status": wo["status"], "technician_id": from_tech}
    if chosen is not None:
        candidate, via = chosen
        update = {**router._holder_fields(candidate, via, now), "exclude": exclude, "updated_at": now}
        data: Any = WorkOrderReassigned(
            ticket_id=ticket_id,
            grid_id=wo["grid_id"],
            round=round_,
            occurred_at=now,
            from_technician_id=from_tech,
            to_technician_id=candidate.technician_id,
            reason=reason,
        )
        outcome = "reassigned"
    else:
        update = {
            "status": Status.QUEUED.value,
            "technician_id": None,
            "queued_at": now,
            "exclude": exclude,
            "updated_at": now,
            "via": None,
        }
        data = WorkOrderQueued(
            ticket_id=ticket_id,
            grid_id=wo["grid_id"],
            round=round_,
            occurred_at=now,
            reason=f"handed back: {reason}",
            priority=need.priority,
            category=need.category,
        )
        outcome = "queued"
    if chosen is None:  # queue entry first: a crash leaves at most a stale entry, which drains drop
        await router.store.enqueue({**wo, **update})
    ok = await router.store.update_work_order(ticket_id, guard, {"$set": update}, [event(data, ticket_id)])
    if not ok:
        if chosen is not None:
            await router.store.release(chosen[0].technician_id, key)
        return "conflict"
    freed = await router._release_holder(wo)
    await router.capacity_freed(freed)
    return outcome
