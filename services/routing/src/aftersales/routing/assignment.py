"""Who should take a work order: candidates in the grid (then neighbours, then in surge the neighbours'
neighbours), skilled, of an allowed tier, on shift and available (his own status, and a heartbeat not
older than the silence limit), ranked by spare capacity with a fair round-robin
tie-break (least recently assigned first). Capacity itself is enforced by the store's atomic update.
Pure, no I/O."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from aftersales.routing.domain import ServiceGrid, Status, Technician, WorkOrder
from aftersales.shared.contracts.desk import TechnicianStatus

Via = Literal["direct", "overflow", "surge", "previous_technician", "queue", "pool"]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEFAULT_SILENT_AFTER_S = 900.0


@dataclass(frozen=True, slots=True)
class Presence:
    """What a technician says of himself and when his mobile client was last heard. One who never sent
    a heartbeat (created by an admin, no app) is never silent: silence counts from a first heartbeat."""

    status: TechnicianStatus = TechnicianStatus.AVAILABLE
    last_heartbeat_at: datetime | None = None

    def silent(self, now: datetime, silent_after_s: float) -> bool:
        """True when his client sent heartbeats and then none for longer than `silent_after_s`."""
        if self.last_heartbeat_at is None:
            return False
        return (now - self.last_heartbeat_at).total_seconds() > silent_after_s

    def dispatchable(self, now: datetime, silent_after_s: float) -> bool:
        """True when he may get new work: available and not silent."""
        return self.status == TechnicianStatus.AVAILABLE and not self.silent(now, silent_after_s)


@dataclass(frozen=True, slots=True)
class TechnicianLoad:
    """A technician with his current load, as last read from the store."""

    technician: Technician
    active_work_orders: int
    last_assigned_at: datetime | None
    presence: Presence = Presence()


@dataclass(frozen=True, slots=True)
class WorkNeed:
    """What a work order needs from a technician."""

    grid_id: str
    device_type: str
    category: str
    priority: str
    min_tier: int = 1  # 2 for an escalation
    exclude: frozenset[str] = frozenset()  # e.g. the technician who handed it back


def need_of(work_order: WorkOrder, *, exclude: Iterable[str], min_tier: int | None = None) -> WorkNeed:
    """Return what a work order needs: tier 2 once escalated there (unless `min_tier` says)."""
    facts = work_order.facts
    tier = min_tier or (2 if work_order.escalation_level == "tier2" else 1)
    return WorkNeed(
        work_order.grid_id,
        facts["device_type"],
        facts["category"],
        facts["priority"],
        min_tier=tier,
        exclude=frozenset(exclude),
    )


@dataclass(frozen=True, slots=True)
class Candidate:
    technician_id: str
    grid_id: str
    tier: int
    team_id: str | None
    effective_capacity: int
    spare: int
    via: Via
    reused: bool = False  # the slot was already held for this work order (crash recovery)


def effective_capacity(capacity: int, grid: ServiceGrid | None, surge_on: bool) -> int:
    """Return a technician's capacity, raised by his grid's factor while it is in surge."""
    if grid is None or not surge_on:
        return capacity
    return math.floor(capacity * grid.surge.capacity_factor)


def grid_rings(home: str, grids: Mapping[str, ServiceGrid], surge: bool) -> list[list[str]]:
    """Return [home], [neighbours], and in surge [neighbours of neighbours], each grid once."""
    seen = {home}
    rings = [[home]]
    depth = 3 if surge else 2
    frontier = [home]
    for _ in range(depth - 1):
        ring: list[str] = []
        for gid in frontier:
            grid = grids.get(gid)
            for n in grid.neighbours if grid else []:
                if n not in seen and n in grids:
                    seen.add(n)
                    ring.append(n)
        rings.append(ring)
        frontier = ring
    return rings


def rank_candidates(
    need: WorkNeed,
    technicians: Sequence[TechnicianLoad],
    grids: Mapping[str, ServiceGrid],
    surge_grids: frozenset[str],
    now: datetime,
    *,
    silent_after_s: float = DEFAULT_SILENT_AFTER_S,
) -> list[Candidate]:
    """Return the technicians who may take the work, best first; empty when nobody has spare capacity."""
    home_surge = need.grid_id in surge_grids
    rings = grid_rings(need.grid_id, grids, home_surge)
    ring_of = {gid: i for i, ring in enumerate(rings) for gid in ring}
    ranked: list[tuple[tuple[int, int, int, datetime, str], Candidate]] = []
    for load in technicians:
        tech = load.technician
        ring = ring_of.get(tech.grid_id)
        if ring is None or tech.id in need.exclude or not tech.skilled_for(need.device_type, need.category):
            continue
        if tech.tier < need.min_tier:
            continue
        # Tier 1 work goes to tier 1; tier 2 may take it for P1 or when the home grid is in surge.
        stretch = need.min_tier == 1 and tech.tier == 2
        if stretch and not (need.priority == "P1" or home_surge):
            continue
        grid = grids.get(tech.grid_id)
        if not tech.on_shift(now, grid.calendar.timezone if grid else "UTC"):
            continue
        if not load.presence.dispatchable(now, silent_after_s):
            continue
        cap = effective_capacity(tech.capacity, grid, tech.grid_id in surge_grids)
        spare = cap - load.active_work_orders
        if spare <= 0:
            continue
        via: Via = "direct" if ring == 0 else "overflow" if ring == 1 else "surge"
        if stretch and need.priority != "P1":
            via = "surge"
        key = (ring, int(stretch), -spare, load.last_assigned_at or EPOCH, tech.id)
        ranked.append((key, Candidate(tech.id, tech.grid_id, tech.tier, tech.team_id, cap, spare, via)))
    ranked.sort(key=lambda item: item[0])
    return [c for _, c in ranked]


def backlog_surge_change(*, surge_on: bool, automatic: bool, queued: int, threshold: int) -> bool | None:
    """Return True to switch surge on, False to switch it off, None to leave it (automatic mode only).

    On when the queue passes the threshold; off once it drops below half of it (hysteresis, so a grid
    does not flap on every assignment)."""
    if not automatic:
        return None
    if not surge_on and queued > threshold:
        return True
    if surge_on and queued < max(threshold // 2, 1):
        return False
    return None


def assigned_fields(candidate: Candidate, via: Via, now: datetime) -> dict[str, Any]:
    """Return the work-order fields of holding `candidate`'s slot (assigned to him)."""
    return {
        "status": Status.ASSIGNED.value,
        "technician_id": candidate.technician_id,
        "technician_grid_id": candidate.grid_id,
        "tier": candidate.tier,
        "team_id": candidate.team_id,
        "via": via,
        "assigned_at": now,
        "queued_at": None,
    }


def queued_fields(now: datetime) -> dict[str, Any]:
    """Return the work-order fields of waiting in its grid's queue (nobody holds it)."""
    return {"status": Status.QUEUED.value, "technician_id": None, "queued_at": now, "via": None}
