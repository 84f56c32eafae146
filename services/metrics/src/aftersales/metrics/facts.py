"""Per-ticket facts: what the metrics service knows about one ticket, folded from every stream
(the fold itself is in `fold`); the customer's waiting time and which facts document an event belongs to.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from aftersales.shared.contracts.events import ComplaintEvent
from aftersales.shared.contracts.fieldwork import StockLow

COMPLAINT_SUBJECT_PREFIX = "complaint:"
STOCK_LOW_SUBJECT_PREFIX = "stock-low:"
WAREHOUSE_PREFIX = "warehouse:"
VAN_PREFIX = "van:"


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Survey(_Model):
    survey_id: str
    round: int = 1
    csat: int
    nps: int | None = None
    technician_id: str | None = None
    submitted_at: datetime


class Complaint(_Model):
    complaint_id: str
    opened_at: datetime | None = None
    deadline_at: datetime | None = None
    deadline_set_at: datetime | None = None
    closed_at: datetime | None = None
    within_deadline: bool | None = None
    category: str | None = None
    scope: str | None = None
    escalated: bool = False


class Visit(_Model):
    visit_id: str
    kind: str
    scheduled_at: datetime | None = None
    due_at: datetime | None = None
    due_key: tuple[int, datetime] | None = None
    completed_at: datetime | None = None
    outcome: str | None = None
    outcome_attempt: int = 0
    missed_at: datetime | None = None
    cancelled_at: datetime | None = None

    @property
    def done(self) -> bool:
        return self.completed_at is not None or self.cancelled_at is not None


class FieldVisit(_Model):
    """One fieldwork appointment of the ticket (an on-site visit), merged from its events by its id."""

    appointment_id: str
    technician_id: str | None = None
    technician_at: datetime | None = None
    checked_in_at: datetime | None = None
    travel_s: int | None = None
    checked_out_at: datetime | None = None
    work_s: int | None = None
    no_show_at: datetime | None = None
    absent: str | None = None


class PartUse(_Model):
    """One service-report line's parts taken from stock, keyed `<report id>:<line id>`: how many were taken
    (0 while only their return is known) and how many of them were given back (line removed, report
    signed meanwhile)."""

    line_key: str
    part_id: str
    quantity: int = 0
    unit_cost_cents: int | None = None
    returned: int = 0
    location_id: str | None = None  # the stock they left: `van:<technician>` or `warehouse:<grid>`
    consumed_at: datetime | None = None  # None on facts folded before consumption days were kept

    @property
    def used(self) -> int:
        """The parts the line kept: taken and not given back."""
        return max(self.quantity - self.returned, 0)


class StockAlert(_Model):
    """A low-stock alert (`stock-low`): its own facts document, keyed by the event's id."""

    location_id: str
    part_id: str
    at: datetime


class Facts(_Model):
    """Everything known about one ticket (or, for a complaint without a ticket, about that complaint)."""

    subject: str
    channel: str | None = None
    category: str | None = None
    priority: str | None = None
    priority_at: datetime | None = None
    product: str | None = None
    customer_tier: str | None = None
    facts_at: datetime | None = None
    created_at: datetime | None = None
    grid: str | None = None
    team: str | None = None
    technician: str | None = None
    grid_at: datetime | None = None
    technician_at: datetime | None = None
    team_at: datetime | None = None
    first_assigned_at: datetime | None = None
    first_response_at: datetime | None = None
    first_resolved_at: datetime | None = None
    resolved_rounds: dict[str, datetime] = {}
    reopen_count: int = 0
    last_reopened_at: datetime | None = None
    escalated: bool = False
    pauses: list[datetime] = []
    resumes: list[datetime] = []
    breached_clocks: list[str] = []
    closed_at: datetime | None = None
    cancelled_at: datetime | None = None
    merged_alerts: int = 0
    surveys: list[Survey] = []
    complaints: list[Complaint] = []
    visits: list[Visit] = []
    field_visits: list[FieldVisit] = []
    parts: list[PartUse] = []
    stock_low: StockAlert | None = None

    @property
    def is_ticket(self) -> bool:
        return not self.subject.startswith((COMPLAINT_SUBJECT_PREFIX, STOCK_LOW_SUBJECT_PREFIX))

    @property
    def resolved_now(self) -> bool:
        """True when the latest round (1 + reopens) has a resolution."""
        current_round = 1 + self.reopen_count
        return any(int(r) >= current_round for r in self.resolved_rounds)

    @property
    def is_open(self) -> bool:
        """An open ticket is in the backlog: created, not currently resolved, not closed or cancelled."""
        if self.created_at is None or self.cancelled_at is not None:
            return False
        if self.closed_at is not None and (
            self.last_reopened_at is None or self.closed_at >= self.last_reopened_at
        ):
            return False
        return not self.resolved_now

    def to_document(self) -> dict[str, Any]:
        return self.model_dump(mode="python")


def paused_seconds(f: Facts, until: datetime) -> float:
    """Return the time the ticket spent waiting on the customer between creation and `until`.

    A pause starts at a `pending` event and ends at the next resume (work started, customer replied);
    an unmatched pause runs until `until`. Overlaps count once.
    """
    if f.created_at is None:
        return 0.0
    marks = sorted([(t, 1) for t in f.pauses] + [(t, 0) for t in f.resumes])
    total = 0.0
    paused_since: datetime | None = None
    for at, is_pause in marks:
        at = min(max(at, f.created_at), until)
        if is_pause and paused_since is None:
            paused_since = at
        elif not is_pause and paused_since is not None:
            total += (at - paused_since).total_seconds()
            paused_since = None
    if paused_since is not None:
        total += (until - paused_since).total_seconds()
    return max(total, 0.0)


def subject_of(data: BaseModel, event_id: str = "") -> str:
    """Return the facts document of an event: its ticket, else its complaint, else its own for a low-stock
    alert (by event id: redelivered, it is the same alert), else "" (none)."""
    ticket_id = getattr(data, "ticket_id", None)
    if ticket_id:
        return str(ticket_id)
    if isinstance(data, ComplaintEvent):
        return f"{COMPLAINT_SUBJECT_PREFIX}{data.complaint_id}"
    if isinstance(data, StockLow) and event_id:
        return f"{STOCK_LOW_SUBJECT_PREFIX}{event_id}"
    return ""  # grid-level events (surge on/off, deliveries) describe no ticket


def location_grid(location_id: str | None, ticket_grid: str | None) -> str:
    """Return the grid of a stock location: a warehouse names its grid; a van (a technician's stock) takes
    the grid of the ticket its parts went to, else `unknown` (metrics keeps no technician's grid)."""
    if location_id is not None and location_id.startswith(WAREHOUSE_PREFIX):
        return location_id.removeprefix(WAREHOUSE_PREFIX) or "unknown"
    return ticket_grid or "unknown"


def location_technician(location_id: str | None) -> str | None:
    """Return the technician whose van a stock location is, if it is one."""
    if location_id is not None and location_id.startswith(VAN_PREFIX):
        return location_id.removeprefix(VAN_PREFIX) or None
    return None
