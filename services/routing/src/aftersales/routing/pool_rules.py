"""Who may claim an offered work order (抢单): a technician of its grid, skilled for it, of its tier, on
shift, available, not silent, with a free slot, who has not declined it. Pure, no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from aftersales.routing.assignment import TechnicianLoad, effective_capacity, need_of
from aftersales.routing.domain import ServiceGrid, WorkOrder

Refusal = Literal["not_offered", "skill", "tier", "declined", "off_shift", "unavailable", "full"]
NOT_FOR_HIM: frozenset[Refusal] = frozenset({"not_offered", "skill", "tier"})  # never his: 403


def claim_refusal(
    load: TechnicianLoad,
    wo: WorkOrder,
    grid: ServiceGrid | None,
    *,
    surge_on: bool,
    now: datetime,
    silent_after_s: float,
) -> Refusal | None:
    """Return why the technician may not claim the offered work order now, or None when he may."""
    tech = load.technician
    if grid is None or tech.grid_id != wo.grid_id:
        return "not_offered"
    if not tech.skilled_for(str(wo.facts["device_type"]), wo.category):
        return "skill"
    if tech.tier < need_of(wo, exclude=()).min_tier:
        return "tier"
    if tech.id in wo.declined:
        return "declined"
    if not tech.on_shift(now, grid.calendar.timezone):
        return "off_shift"
    if not load.presence.dispatchable(now, silent_after_s):
        return "unavailable"
    if load.active_work_orders >= effective_capacity(tech.capacity, grid, surge_on):
        return "full"
    return None


def eligible(
    loads: Iterable[TechnicianLoad],
    wo: WorkOrder,
    grid: ServiceGrid | None,
    *,
    surge_on: bool,
    now: datetime,
    silent_after_s: float,
) -> list[str]:
    """Return the ids of the technicians who may claim the work order now."""
    return [
        load.technician.id
        for load in loads
        if claim_refusal(load, wo, grid, surge_on=surge_on, now=now, silent_after_s=silent_after_s) is None
    ]


REFUSAL_TEXT: dict[Refusal, str] = {
    "not_offered": "is not offered in your grid",
    "skill": "needs a skill you do not have",
    "tier": "needs a higher tier",
    "declined": "was declined or returned by you",
    "off_shift": "cannot be claimed off shift",
    "unavailable": "cannot be claimed unless you are available (and your client is heard)",
    "full": "cannot be claimed: you hold as many work orders as your capacity",
}
