"""Routing's business objects and rules: service grids, technicians, the work-order state machine and
grid planning. Pure data and functions, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field, field_validator

from aftersales.routing.calendar import BusinessCalendar, WorkingWindow
from aftersales.shared.errors import Conflict

ID_PATTERN = r"^[A-Za-z0-9_.:-]+$"


class Team(BaseModel):
    id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    name: str = Field(min_length=1, max_length=200)


class SurgeSettings(BaseModel):
    """Surge mode (应急预案): when it switches on by itself and what it changes."""

    backlog_threshold: int = Field(default=20, ge=1, description="queued work orders that switch surge on")
    capacity_factor: float = Field(default=1.5, ge=1.0, le=5.0, description="capacity multiplier in surge")
    automatic: bool = Field(default=True, description="switch on/off by backlog without a supervisor")


class ServiceGrid(BaseModel):
    """A service grid (网格): the technicians serving one region for some device types."""

    id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    region_path: list[str] = Field(min_length=1, description="region codes, e.g. [310000, 310100, 310104]")
    device_types: list[str] = Field(default_factory=list, description="served device types; empty = all")
    calendar: BusinessCalendar
    teams: list[Team] = Field(default_factory=list)
    neighbours: list[str] = Field(default_factory=list, description="ids of neighbouring grids (资源共享)")
    supervisor_id: str | None = Field(default=None, max_length=64)
    surge: SurgeSettings = Field(default_factory=SurgeSettings)

    @field_validator("region_path")
    @classmethod
    def _codes(cls, value: list[str]) -> list[str]:
        for code in value:
            if not code.isdigit() or len(code) != 6:
                raise ValueError(f"region code {code!r} must be 6 digits")
        return value

    def covers(self, region_code: str, device_type: str) -> bool:
        """True when this grid serves the region path and device type."""
        parts = region_parts(region_code)
        if parts[: len(self.region_path)] != self.region_path:
            return False
        return not self.device_types or device_type in self.device_types


def region_parts(region_code: str) -> list[str]:
    return [p for p in region_code.split("/") if p]


def match_grid(grids: Iterable[ServiceGrid], region_code: str, device_type: str) -> ServiceGrid | None:
    """Return the most specific grid covering the region and device type (a device-specific grid wins a
    tie), or None."""
    covering = [g for g in grids if g.covers(region_code, device_type)]
    if not covering:
        return None
    return min(covering, key=lambda g: (-len(g.region_path), not g.device_types, g.id))


class Technician(BaseModel):
    """A technician: where he works, what he can fix, how much at once."""

    id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    grid_id: str = Field(min_length=1, max_length=64)
    team_id: str | None = Field(default=None, max_length=64)
    tier: int = Field(ge=1, le=2, description="1 = first line, 2 = specialist")
    device_types: list[str] = Field(default_factory=list, description="device types he fixes; empty = all")
    categories: list[str] = Field(default_factory=list, description="ticket categories; empty = all")
    capacity: int = Field(ge=0, le=1000, description="max concurrent work orders")
    on_duty: bool = True
    shift: dict[int, list[WorkingWindow]] | None = Field(
        default=None, description="weekly shift in the grid's time zone; none = whenever on_duty"
    )

    def skilled_for(self, device_type: str, category: str) -> bool:
        return (not self.device_types or device_type in self.device_types) and (
            not self.categories or category in self.categories
        )

    def on_shift(self, now: datetime, timezone: str) -> bool:
        """True when on duty and (if a shift is set) inside it at `now`."""
        if not self.on_duty:
            return False
        if self.shift is None:
            return True
        cal = BusinessCalendar(timezone=timezone, weekly=self.shift)
        local = now.astimezone(cal.zone)
        minute = local.hour * 60 + local.minute
        return any(w.start_minute <= minute < w.end_minute for w in cal.windows_on(local.date()))


class Status(StrEnum):
    QUEUED = "queued"
    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    IN_PROGRESS = "in_progress"
    PENDING_CUSTOMER = "pending_customer"
    RESOLVED = "resolved"
    CANCELLED = "cancelled"
    CLOSED = "closed"


OPEN_STATUSES = (
    Status.QUEUED,
    Status.ASSIGNED,
    Status.ACCEPTED,
    Status.IN_PROGRESS,
    Status.PENDING_CUSTOMER,
)
HOLDING_STATUSES = (Status.ASSIGNED, Status.ACCEPTED, Status.IN_PROGRESS, Status.PENDING_CUSTOMER)


class Action(StrEnum):
    ACCEPT = "accept"
    START = "start"
    PENDING_CUSTOMER = "pending-customer"
    RESOLVE = "resolve"
    ESCALATE = "escalate"
    HAND_BACK = "hand-back"
    CUSTOMER_REPLIED = "customer-replied"


TRANSITIONS: Mapping[Action, tuple[tuple[Status, ...], Status | None]] = {
    Action.ACCEPT: ((Status.ASSIGNED,), Status.ACCEPTED),
    Action.START: ((Status.ACCEPTED, Status.PENDING_CUSTOMER), Status.IN_PROGRESS),
    Action.PENDING_CUSTOMER: ((Status.ACCEPTED, Status.IN_PROGRESS), Status.PENDING_CUSTOMER),
    Action.RESOLVE: ((Status.ACCEPTED, Status.IN_PROGRESS, Status.PENDING_CUSTOMER), Status.RESOLVED),
    Action.ESCALATE: (HOLDING_STATUSES, None),
    Action.HAND_BACK: ((Status.ASSIGNED, Status.ACCEPTED, Status.IN_PROGRESS), None),
    Action.CUSTOMER_REPLIED: ((Status.PENDING_CUSTOMER,), Status.IN_PROGRESS),
}


def check_transition(action: Action, current: str) -> Status | None:
    """Return the status after `action`, or raise Conflict naming the allowed states."""
    allowed, target = TRANSITIONS[action]
    if current not in allowed:
        raise Conflict(
            f"cannot {action.value} a work order that is {current}; "
            f"allowed from: {', '.join(s.value for s in allowed)}"
        )
    return target


def allowed_from(action: Action) -> list[str]:
    return [s.value for s in TRANSITIONS[action][0]]


# ------------------------------------------------------------------------------- grid planning


@dataclass(frozen=True, slots=True)
class GridLoad:
    grid_id: str
    region_path: Sequence[str]
    open_work_orders: int
    technicians_on_duty: int
    open_by_child_region: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class PlanningFinding:
    grid_id: str
    open_work_orders: int
    technicians_on_duty: int
    per_technician: float
    suggested_split: list[list[str]]
    suggestion: str


def plan_grids(loads: Iterable[GridLoad], threshold: float) -> list[PlanningFinding]:
    """Return grids whose open work orders per on-duty technician exceed `threshold`, busiest first,
    each with a split by its busiest child regions (客户多的地方划分更多的网格)."""
    findings: list[PlanningFinding] = []
    for load in loads:
        ratio = load.open_work_orders / max(load.technicians_on_duty, 1)
        if ratio <= threshold:
            continue
        children = sorted(load.open_by_child_region.items(), key=lambda kv: (-kv[1], kv[0]))
        split = _split_children(children, load.open_work_orders, threshold, load.technicians_on_duty)
        if len(split) > 1:
            parts = "; ".join(
                f"[{', '.join('/'.join([*load.region_path, c]) for c in group)}]" for group in split
            )
            suggestion = f"split into {len(split)} grids by child region: {parts}"
        elif children:
            suggestion = (
                f"all open work orders come from one child region {children[0][0]}: "
                "add technicians or a device-type grid there"
            )
        else:
            suggestion = "add technicians: the backlog has no finer region code to split by"
        findings.append(
            PlanningFinding(
                load.grid_id,
                load.open_work_orders,
                load.technicians_on_duty,
                round(ratio, 2),
                split,
                suggestion,
            )
        )
    findings.sort(key=lambda f: -f.per_technician)
    return findings


def _split_children(
    children: Sequence[tuple[str, int]], total: int, threshold: float, technicians: int
) -> list[list[str]]:
    """Give each busy child region its own grid until the rest is within the threshold."""
    if len(children) < 2:
        return [[c for c, _ in children]] if children else []
    groups: list[list[str]] = []
    remaining = total
    rest = list(children)
    per_grid_technicians = max(technicians, 1)
    while len(rest) > 1 and remaining / per_grid_technicians > threshold:
        code, count = rest.pop(0)
        groups.append([code])
        remaining -= count
    groups.append([c for c, _ in rest])
    return groups
