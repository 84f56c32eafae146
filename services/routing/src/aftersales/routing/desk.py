"""Dispatch by hand (派单/改派/转派): a supervisor gives a work order to a named technician, or transfers it
to another grid, with a reason. The named technician's skill, tier, capacity and availability are
checked; a failed check is overridden only with an override reason, which the event records.

Crash-safe the way a hand-over is: the new technician's slot is taken first, the work order is written
(guarded by its round, status and technician, so a racing accept or hand-back wins or loses as a
whole), and only then is the previous technician's slot released. A crash between two writes leaves a
slot no work order holds, which the slot reconciler releases."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from aftersales.routing import messages
from aftersales.routing.assignment import (
    Candidate,
    Via,
    assigned_fields,
    effective_capacity,
    need_of,
    queued_fields,
)
from aftersales.routing.capacity import Capacity
from aftersales.routing.clocks import now_utc
from aftersales.routing.domain import Status, WorkOrder
from aftersales.routing.grids import GridDirectory, GridView
from aftersales.routing.metrics import HAND_DISPATCHES
from aftersales.routing.queues import Queues
from aftersales.routing.store import Guard, RoutingStore, presence_of, slot_key, technician_of
from aftersales.shared.contracts.desk import HandCheck, TechnicianStatus
from aftersales.shared.errors import Conflict, InvalidRequest, NotFound

MOVABLE = (Status.OFFERED, Status.QUEUED, Status.ASSIGNED, Status.ACCEPTED, Status.IN_PROGRESS)
UNLIMITED = 1_000_000  # the capacity a capacity override reserves against
DESK_VIA = "desk"


@dataclass(frozen=True, slots=True)
class HandOrder:
    """A supervisor's order: where the work order goes, and why."""

    supervisor_id: str
    reason: str
    technician_id: str | None = None
    grid_id: str | None = None
    override_reason: str | None = None
    expected_status: Status | None = None  # what the supervisor saw: 409 if it is something else now


@dataclass(frozen=True, slots=True)
class Desk:
    """The supervisor's desk: dispatch by hand."""

    store: RoutingStore
    grids: GridDirectory
    capacity: Capacity
    queues: Queues

    async def dispatch_by_hand(self, ticket_id: str, order: HandOrder) -> dict[str, Any]:
        """Move a work order as the supervisor ordered; return it afterwards (409 if it moved meanwhile)."""
        if order.technician_id is None and order.grid_id is None:
            raise InvalidRequest(
                "name the technician_id or the grid_id to dispatch to", field="technician_id"
            )
        wo = await self.store.load_work_order(ticket_id)
        if wo is None:
            raise NotFound(f"work order {ticket_id} not found", field="ticket_id")
        if order.expected_status is not None and wo.status != order.expected_status:
            raise Conflict(f"work order {ticket_id} is {wo.status} now, not {order.expected_status}")
        if wo.status not in MOVABLE:
            raise Conflict(
                f"cannot dispatch a work order that is {wo.status} by hand; "
                f"allowed from: {', '.join(s.value for s in MOVABLE)}"
            )
        view = await self.grids.view()
        grid_id = order.grid_id or wo.grid_id
        if grid_id not in view.grids:
            raise InvalidRequest(f"unknown grid {grid_id}", field="grid_id")
        chosen, overridden = await self._choose(view, wo, grid_id, order)
        evt = messages.dispatched_by_hand(
            wo,
            now_utc(),
            grid_id=grid_id,
            to_technician_id=chosen.technician_id if chosen else None,
            supervisor_id=order.supervisor_id,
            reason=order.reason,
            overridden=overridden,
            override_reason=order.override_reason,
        )
        await self._write(wo, grid_id, chosen, order.reason, evt)
        HAND_DISPATCHES.labels(
            "assigned" if chosen else "queued", "overridden" if overridden else "checked"
        ).inc()
        after = await self.store.work_order(ticket_id)
        assert after is not None
        return after

    async def _choose(
        self, view: GridView, wo: WorkOrder, grid_id: str, order: HandOrder
    ) -> tuple[Candidate | None, list[HandCheck]]:
        """Take a slot of the named technician, or of the best one in the new grid (None: nobody)."""
        moved = replace(wo, grid_id=grid_id)
        key = slot_key(wo.ticket_id, wo.round)
        if order.technician_id is not None:
            if order.technician_id == wo.technician_id and wo.holds_slot:
                raise InvalidRequest(
                    f"{order.technician_id} holds the work order already", field="technician_id"
                )
            return await self._take_named(view, moved, order, key)
        if grid_id == wo.grid_id:
            raise InvalidRequest(f"the work order is in grid {grid_id} already", field="grid_id")
        exclude = [wo.technician_id] if wo.technician_id else []
        reserved = await self.capacity.reserve(view, need_of(moved, exclude=exclude), key)
        return (reserved[0] if reserved else None), []

    async def _take_named(
        self, view: GridView, wo: WorkOrder, order: HandOrder, key: str
    ) -> tuple[Candidate, list[HandCheck]]:
        """Take a slot of the named technician, checked (or overridden with a reason)."""
        tech_id = str(order.technician_id)
        doc = await self.store.technician_doc(tech_id)
        if doc is None:
            raise InvalidRequest(f"unknown technician {tech_id}", field="technician_id")
        tech, presence = technician_of(doc), presence_of(doc)
        if not tech.on_duty or presence.status == TechnicianStatus.OFF:
            raise InvalidRequest(f"technician {tech_id} is off duty", field="technician_id")
        grid = view.grids.get(tech.grid_id)
        cap = effective_capacity(tech.capacity, grid, tech.grid_id in view.surge)
        now = now_utc()
        failed = failed_checks(
            skilled=tech.skilled_for(wo.facts["device_type"], wo.category),
            tier_ok=tech.tier >= need_of(wo, exclude=()).min_tier,
            has_room=int(doc.get("active_work_orders", 0)) < cap,
            available=presence.dispatchable(now, self.capacity.silent_after_s)
            and tech.on_shift(now, grid.calendar.timezone if grid else "UTC"),
        )
        if failed and not order.override_reason:
            raise InvalidRequest(
                f"technician {tech_id} fails the {', '.join(failed)} check(s) for this work order; "
                "give an override_reason to dispatch to him anyway",
                field="technician_id",
            )
        candidate = Candidate(tech.id, tech.grid_id, tech.tier, tech.team_id, cap, 0, "direct")
        if key in doc.get("active_ids", []):  # a slot left by an earlier crash: his already
            return replace(candidate, reused=True), failed
        limit = UNLIMITED if "capacity" in failed else cap
        if not await self.store.reserve(tech.id, key, limit, only_available="availability" not in failed):
            raise Conflict(f"technician {tech_id} changed meanwhile (full or unavailable); try again")
        return candidate, failed

    async def _write(
        self, wo: WorkOrder, grid_id: str, chosen: Candidate | None, reason: str, desk_event: Any
    ) -> None:
        """Write the move (its events with it), then release the previous slot; 409 if it lost a race."""
        now = now_utc()
        key = slot_key(wo.ticket_id, wo.round)
        if chosen is not None:
            via: Via = "direct"
            update = {**assigned_fields(chosen, via, now), "via": DESK_VIA}
            outcome = messages.reassigned(
                wo, now, to_technician_id=chosen.technician_id, reason=reason, grid_id=grid_id
            )
        else:
            update = queued_fields(now)
            outcome = messages.queued(
                wo.ticket_id,
                grid_id,
                wo.round,
                now,
                reason=f"transferred by hand: {reason}",
                need=need_of(replace(wo, grid_id=grid_id), exclude=()),
            )
            # Queue entry first: if the write loses, the entry follows the work order back (store.queued).
            await self.store.enqueue(
                wo.ticket_id, grid_id=grid_id, round_=wo.round, priority_rank=wo.priority_rank, queued_at=now
            )
        update |= {"grid_id": grid_id, "updated_at": now}
        guard = Guard(round=wo.round, status=wo.status, technician_id=wo.technician_id, check_technician=True)
        if not await self.store.write_work_order(wo.ticket_id, guard, update, [desk_event, outcome]):
            if chosen is not None and not chosen.reused:
                await self.capacity.release(chosen.technician_id, key)
            raise Conflict(f"work order {wo.ticket_id} changed meanwhile; read it and try again")
        if chosen is not None and wo.status == Status.QUEUED:
            await self.store.dequeue(wo.ticket_id)
        if wo.status == Status.OFFERED:
            await self.store.unoffer(wo.ticket_id)  # its fallback timer finds it moved: no-op
        if wo.holds_slot and wo.technician_id != (chosen.technician_id if chosen else None):
            await self.queues.capacity_freed(await self.capacity.release_holder(wo))
        if chosen is None:
            await self.queues.after_queued(grid_id)


def failed_checks(*, skilled: bool, tier_ok: bool, has_room: bool, available: bool) -> list[HandCheck]:
    """Return the checks a named technician fails, in a fixed order."""
    checks: list[tuple[HandCheck, bool]] = [
        ("skill", skilled),
        ("tier", tier_ok),
        ("capacity", has_room),
        ("availability", available),
    ]
    return [name for name, ok in checks if not ok]
