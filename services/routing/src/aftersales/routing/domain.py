"""Routing's business objects and rules: service grids, technicians, the work-order state machine and
grid planning. Pure data and functions, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, field_validator

from aftersales.routing.field_holds import FieldHolds, holds_fields
from aftersales.shared.calendar import BusinessCalendar, WorkingWindow
from aftersales.shared.contracts.common import Category, Priority
from aftersales.shared.errors import Conflict

ID_PATTERN = r"^[A-Za-z0-9_.:-]+$"
UNROUTED = "unrouted"  # the grid id of a work order no grid covers
PRIORITY_RANK = {"P1": 1, "P2": 2, "P3": 3, "P4": 4}


class Team(BaseModel):
    id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    name: str = Field(min_length=1, max_length=200)


class SurgeSettings(BaseModel):
    """Surge mode (应急预案): when it switches on by itself and what it changes."""

    backlog_threshold: int = Field(default=20, ge=1, description="queued work orders that switch surge on")
    capacity_factor: float = Field(default=1.5, ge=1.0, le=5.0, description="capacity multiplier in surge")
    automatic: bool = Field(default=True, description="switch on/off by backlog without a supervisor")


class PoolSettings(BaseModel):
    """Grab-order pool (抢单) of a grid: which work orders are offered to its technicians to claim, and
    how long an unclaimed one waits before automatic dispatch takes it."""

    categories: list[Category] = Field(default_factory=list, description="pooled categories; empty = all")
    priorities: list[Priority] = Field(default_factory=list, description="pooled priorities; empty = all")
    fallback_after_s: float = Field(
        default=600.0, gt=0, le=86_400, description="an unclaimed offer goes to automatic dispatch after this"
    )

    @field_validator("categories", "priorities")
    @classmethod
    def _distinct(cls, value: list[Any]) -> list[Any]:
        if len(set(value)) != len(value):
            raise ValueError("each value may appear only once")
        return value

    def covers(self, category: str, priority: str) -> bool:
        """True when a work order of this category and priority is offered rather than dispatched."""
        return (not self.categories or category in self.categories) and (
            not self.priorities or priority in self.priorities
        )


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
    pool: PoolSettings | None = Field(
        default=None, description="grab-order pool (抢单) for some categories/priorities; none = no pool"
    )

    def pools(self, category: str, priority: str) -> bool:
        """True when this grid offers such a work order to its technicians to claim (pool mode)."""
        return self.pool is not None and self.pool.covers(category, priority)

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
    OFFERED = "offered"  # in its grid's pool (抢单), nobody holds it; the first-response clock runs
    QUEUED = "queued"
    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    IN_PROGRESS = "in_progress"
    PENDING_CUSTOMER = "pending_customer"
    RESOLVED = "resolved"
    CANCELLED = "cancelled"
    CLOSED = "closed"


OPEN_STATUSES = (
    Status.OFFERED,
    Status.QUEUED,
    Status.ASSIGNED,
    Status.ACCEPTED,
    Status.IN_PROGRESS,
    Status.PENDING_CUSTOMER,
)
HOLDING_STATUSES = (Status.ASSIGNED, Status.ACCEPTED, Status.IN_PROGRESS, Status.PENDING_CUSTOMER)


@dataclass(frozen=True, slots=True)
class WorkOrder:
    """A ticket round's work order as the rules read it. The states of its SLA clocks (`sla`, by clock
    name, as `clocks.plan_state` returns them) and its ended pauses stay plain records: the clock rules
    read and re-plan them as stored."""

    ticket_id: str
    round: int
    status: Status
    grid_id: str
    facts: Mapping[str, Any]
    priority_rank: int
    started_at: datetime
    sla: Mapping[str, Mapping[str, Any]]
    pauses: Sequence[Mapping[str, Any]] = ()
    paused_since: datetime | None = None
    technician_id: str | None = None
    technician_grid_id: str | None = None
    tier: int | None = None
    via: str | None = None
    exclude: Sequence[str] = ()
    escalation_level: str | None = None
    escalation_due: bool = False
    offer_no: int = 0  # how many times this round was offered in its grid's pool
    declined: Sequence[str] = ()  # technicians who declined or returned it (bounded by the grid's)
    fieldwork: FieldHolds = field(default_factory=FieldHolds)  # parts waits, visit windows (resolution)

    @property
    def priority(self) -> str:
        return str(self.facts["priority"])

    @property
    def category(self) -> str:
        return str(self.facts["category"])

    @property
    def holds_slot(self) -> bool:
        """True while its technician holds a slot for it (assigned and not yet ended or queued)."""
        return self.status in HOLDING_STATUSES

    def clock_fields(self) -> dict[str, Any]:
        """Return the fields the clock rules read, shaped as stored."""
        return {
            "round": self.round,
            "status": self.status,
            "sla": self.sla,
            "pauses": list(self.pauses),
            "paused_since": self.paused_since,
        }


def new_round_fields(
    *,
    round_: int,
    grid_id: str,
    facts: Mapping[str, Any],
    started_at: datetime,
    sla: Mapping[str, Mapping[str, Any]],
    previous_technician_id: str | None,
    now: datetime,
) -> dict[str, Any]:
    """Return the fields a work order starts a round with (who holds it is added by dispatch)."""
    return {
        "round": round_,
        "grid_id": grid_id,
        "facts": dict(facts),
        "priority_rank": PRIORITY_RANK[facts["priority"]],
        "started_at": started_at,
        "updated_at": now,
        "sla": sla,
        "pauses": [],
        "paused_since": None,
        "exclude": [],
        "escalation_level": None,
        "previous_technician_id": previous_technician_id,
        "resolution_code": None,
        "offer_no": 0,
        "declined": [],
        "offered_at": None,
        "fallback_at": None,
        "fieldwork": holds_fields(FieldHolds()),
    }


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


def grid_loads(
    grids: Mapping[str, ServiceGrid],
    open_by_grid_and_region: Mapping[tuple[str, str], int],
    on_duty: Mapping[str, int],
) -> list[GridLoad]:
    """Return each grid's open work orders, split by its child regions, and its on-duty technicians."""
    loads = []
    for gid, grid in grids.items():
        depth = len(grid.region_path)
        children: dict[str, int] = {}
        total = 0
        for (g, region), n in open_by_grid_and_region.items():
            if g != gid:
                continue
            total += n
            parts = region_parts(region)
            child = parts[depth] if len(parts) > depth else "(grid level)"
            children[child] = children.get(child, 0) + n
        loads.append(GridLoad(gid, grid.region_path, total, on_duty.get(gid, 0), children))
    return loads


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
