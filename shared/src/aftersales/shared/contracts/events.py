"""Event data models of every stream. Names are past tense; each carries ids, never raw contact data."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, Field

from aftersales.shared.contracts.common import (
    Category,
    Channel,
    CustomerTier,
    EventData,
    FreeText,
    Priority,
)
from aftersales.shared.contracts.registry import event
from aftersales.shared.contracts.topics import Topic

# ---------------------------------------------------------------- aftersales.tickets.v1 (intake)


class TicketFacts(EventData):
    """What routing, follow-up and metrics need to know about a ticket."""

    ticket_id: str
    channel: Channel
    category: Category
    priority: Priority
    customer_id: str
    customer_tier: CustomerTier = CustomerTier.STANDARD
    customer_timezone: str = "UTC"
    region_code: str = Field(description="administrative region path, e.g. 310000/310100/310104")
    device_type: FreeText
    product_model: FreeText | None = None
    under_warranty: bool | None = None
    fault_code: str | None = None
    submitted_by: str | None = Field(
        default=None,
        description="the API client or gateway that submitted the request (`http:<client>` or "
        "`kafka:<source>`), so downstream services can check who may act on the ticket",
    )


@event("aftersales.ticket.created.v1", Topic.TICKETS)
class TicketCreated(TicketFacts):
    """A customer request became a ticket."""

    created_at: AwareDatetime
    rules_version: str = Field(
        description="version of the classification rules that set category and priority"
    )


@event("aftersales.ticket.updated.v1", Topic.TICKETS)
class TicketUpdated(EventData):
    """A ticket's details or waiting state changed (for example the customer answered)."""

    ticket_id: str
    change: Literal["customer_replied", "details_changed", "priority_changed"]
    priority: Priority | None = None
    category: Category | None = Field(
        default=None, description="the corrected category (`details_changed` by a supervisor)"
    )
    device_type: FreeText | None = Field(
        default=None, description="the corrected product's device type (`details_changed`)"
    )
    product_model: FreeText | None = Field(default=None, description="the corrected product's model")
    updated_at: AwareDatetime


@event("aftersales.ticket.merged.v1", Topic.TICKETS)
class TicketMerged(EventData):
    """A repeated IoT alert was folded into the open ticket of the same device and fault (alert storm)."""

    ticket_id: str
    fault_code: str
    alert_count: int = Field(ge=2)
    first_seen: AwareDatetime
    last_seen: AwareDatetime


@event("aftersales.ticket.reopened.v1", Topic.TICKETS)
class TicketReopened(TicketFacts):
    """A resolved ticket was reopened; routing should prefer the previous technician."""

    reason: FreeText
    reopen_count: int = Field(ge=1)
    previous_technician_id: str | None = None
    reopened_at: AwareDatetime


@event("aftersales.ticket.closed.v1", Topic.TICKETS)
class TicketClosed(EventData):
    """A ticket was closed after its resolution was confirmed."""

    ticket_id: str
    reason: Literal["confirmed_resolved", "auto_closed", "closed_by_agent"]
    closed_at: AwareDatetime


@event("aftersales.ticket.cancelled.v1", Topic.TICKETS)
class TicketCancelled(EventData):
    """A ticket was cancelled before it was resolved."""

    ticket_id: str
    reason: FreeText
    cancelled_at: AwareDatetime


# ---------------------------------------------------------------- aftersales.assignments.v1 (routing)


class SlaClock(StrEnum):
    FIRST_RESPONSE = "first_response"
    RESOLUTION = "resolution"


class AssignmentEvent(EventData):
    ticket_id: str
    grid_id: str
    round: int = Field(default=1, ge=1, description="dispatch round: 1, then +1 on each reopen")
    occurred_at: AwareDatetime


@event("aftersales.assignment.assigned.v1", Topic.ASSIGNMENTS)
class WorkOrderAssigned(AssignmentEvent):
    """A work order was given to a technician."""

    technician_id: str
    team_id: str | None = None
    tier: int = Field(ge=1, le=2)
    via: Literal["direct", "overflow", "surge", "previous_technician", "queue"]
    priority: Priority
    category: Category
    first_response_due: AwareDatetime | None = None
    resolution_due: AwareDatetime | None = None


@event("aftersales.assignment.queued.v1", Topic.ASSIGNMENTS)
class WorkOrderQueued(AssignmentEvent):
    """No technician could take the work order; it waits for capacity in its grid."""

    reason: FreeText
    priority: Priority
    category: Category


@event("aftersales.assignment.accepted.v1", Topic.ASSIGNMENTS)
class WorkOrderAccepted(AssignmentEvent):
    """The technician accepted the work order (first response)."""

    technician_id: str


@event("aftersales.assignment.started.v1", Topic.ASSIGNMENTS)
class WorkOrderStarted(AssignmentEvent):
    """The technician started (or resumed) work."""

    technician_id: str


@event("aftersales.assignment.pending.v1", Topic.ASSIGNMENTS)
class WorkOrderPending(AssignmentEvent):
    """The work order waits on the customer; SLA clocks are paused."""

    technician_id: str
    reason: FreeText = ""


@event("aftersales.assignment.escalated.v1", Topic.ASSIGNMENTS)
class WorkOrderEscalated(AssignmentEvent):
    """The work order was escalated to tier 2 or to the grid supervisor."""

    level: Literal["tier2", "supervisor"]
    reason: Literal["sla_breach", "technician", "supervisor", "customer"]
    from_technician_id: str | None = None
    to_technician_id: str | None = None
    supervisor_id: str | None = Field(
        default=None, description="the grid supervisor notified when level is supervisor"
    )


@event("aftersales.assignment.reassigned.v1", Topic.ASSIGNMENTS)
class WorkOrderReassigned(AssignmentEvent):
    """The work order moved from one technician to another."""

    from_technician_id: str | None
    to_technician_id: str
    reason: FreeText


@event("aftersales.assignment.resolved.v1", Topic.ASSIGNMENTS)
class WorkOrderResolved(AssignmentEvent):
    """The technician resolved the work order."""

    technician_id: str
    resolution_code: str
    escalated: bool = False
    priority: Priority
    category: Category


@event("aftersales.assignment.sla-warning.v1", Topic.ASSIGNMENTS)
class SlaWarning(AssignmentEvent):
    """An SLA clock passed a warning threshold of its target."""

    clock: SlaClock
    threshold_pct: int = Field(ge=1, le=99)
    due_at: AwareDatetime
    technician_id: str | None = None


@event("aftersales.assignment.sla-breached.v1", Topic.ASSIGNMENTS)
class SlaBreached(AssignmentEvent):
    """An SLA clock passed its target."""

    clock: SlaClock
    due_at: AwareDatetime
    technician_id: str | None = None


@event("aftersales.assignment.surge-on.v1", Topic.ASSIGNMENTS)
class SurgeSwitchedOn(EventData):
    """Surge mode (应急预案) was switched on for a grid."""

    grid_id: str
    trigger: Literal["supervisor", "backlog"]
    backlog: int = Field(ge=0)
    occurred_at: AwareDatetime


@event("aftersales.assignment.surge-off.v1", Topic.ASSIGNMENTS)
class SurgeSwitchedOff(EventData):
    """Surge mode was switched off for a grid."""

    grid_id: str
    trigger: Literal["supervisor", "backlog"]
    backlog: int = Field(ge=0)
    occurred_at: AwareDatetime


# ---------------------------------------------------------------- aftersales.followups.v1 (followup)


class VisitKind(StrEnum):
    CALLBACK = "callback"
    ON_SITE = "on_site"
    CARE = "care"


class VisitOutcome(StrEnum):
    CONFIRMED_RESOLVED = "confirmed_resolved"
    NOT_RESOLVED = "not_resolved"
    UNREACHABLE = "unreachable"


class VisitEvent(EventData):
    visit_id: str
    ticket_id: str
    kind: VisitKind
    occurred_at: AwareDatetime


@event("aftersales.followup.scheduled.v1", Topic.FOLLOWUPS)
class VisitScheduled(VisitEvent):
    """A follow-up visit (回访) was scheduled."""

    due_at: AwareDatetime
    grid_id: str | None = None
    round: int = Field(default=1, ge=1, description="dispatch round of the resolution this visit follows")
    attempt: int = Field(default=1, ge=1, description="contact attempt; >1 after an unreachable retry")
    deadline_at: AwareDatetime | None = Field(default=None, description="missed when still open after this")
    technician_id: str | None = None
    rescheduled: bool = False


@event("aftersales.followup.due.v1", Topic.FOLLOWUPS)
class VisitDue(VisitEvent):
    """A follow-up visit became due."""

    due_at: AwareDatetime
    grid_id: str | None = None
    round: int = Field(default=1, ge=1)
    attempt: int = Field(default=1, ge=1)


@event("aftersales.followup.completed.v1", Topic.FOLLOWUPS)
class VisitCompleted(VisitEvent):
    """A follow-up visit ended with an outcome."""

    outcome: VisitOutcome
    attempt: int = Field(default=1, ge=1)
    technician_id: str | None = None
    round: int = Field(default=1, ge=1)


@event("aftersales.followup.missed.v1", Topic.FOLLOWUPS)
class VisitMissed(VisitEvent):
    """A follow-up visit went overdue without an outcome."""

    due_at: AwareDatetime
    reason: Literal["overdue", "unreachable"] = "overdue"
    round: int = Field(default=1, ge=1)
    attempt: int = Field(default=1, ge=1)


@event("aftersales.followup.reopen-requested.v1", Topic.FOLLOWUPS)
class ReopenRequested(VisitEvent):
    """The customer said the problem is not resolved; intake should reopen the ticket."""

    reason: FreeText
    round: int = Field(default=1, ge=1, description="the round whose resolution was not confirmed")
    technician_id: str | None = Field(default=None, description="who resolved that round")


@event("aftersales.followup.cancelled.v1", Topic.FOLLOWUPS)
class VisitCancelled(VisitEvent):
    """A follow-up visit was cancelled (the ticket was cancelled or closed)."""

    reason: FreeText


# ---------------------------------------------------------------- aftersales.feedback.v1 (feedback)


class ComplaintState(StrEnum):
    RECEIVED = "received"
    INVESTIGATING = "investigating"
    RESOLUTION_PROPOSED = "resolution_proposed"
    REPLIED = "replied"
    CLOSED = "closed"


class ComplaintScope(StrEnum):
    COMMON_CAUSE = "common_cause"  # 共性: many customers, same product/category
    INDIVIDUAL = "individual"  # 个性


@event("aftersales.feedback.survey-sent.v1", Topic.FEEDBACK)
class SurveySent(EventData):
    """A satisfaction survey was sent for one resolution of a ticket."""

    survey_id: str
    ticket_id: str
    round: int = Field(ge=1)
    technician_id: str | None = None
    expires_at: AwareDatetime
    occurred_at: AwareDatetime
    link: str | None = Field(
        default=None,
        description="the customer's answer link (base URL + signed token): a bearer credential for this "
        "one survey, valid until expires_at, which is why it travels only on the internal feedback topic; "
        "absent from events of older feedback releases",
    )


@event("aftersales.feedback.survey-submitted.v1", Topic.FEEDBACK)
class SurveySubmitted(EventData):
    """The customer answered a survey (CSAT 1-5, NPS 0-10)."""

    survey_id: str
    ticket_id: str
    round: int = Field(ge=1)
    technician_id: str | None = None
    csat: int = Field(ge=1, le=5)
    nps: int | None = Field(default=None, ge=0, le=10)
    has_comment: bool = False
    occurred_at: AwareDatetime


class ComplaintEvent(EventData):
    complaint_id: str
    ticket_id: str | None = None
    state: ComplaintState
    occurred_at: AwareDatetime


@event("aftersales.feedback.complaint-opened.v1", Topic.FEEDBACK)
class ComplaintOpened(ComplaintEvent):
    """A complaint (投诉) was opened."""

    source: Literal["api", "channel", "low_csat"]
    scope: ComplaintScope = ComplaintScope.INDIVIDUAL
    category: Category | None = None
    deadline_at: AwareDatetime
    product_model: FreeText | None = None
    owner_id: str | None = None
    ack_deadline_at: AwareDatetime | None = Field(default=None, description="acknowledge (investigate) by")
    survey_id: str | None = Field(default=None, description="for source=low_csat: the survey that caused it")


@event("aftersales.feedback.complaint-updated.v1", Topic.FEEDBACK)
class ComplaintUpdated(ComplaintEvent):
    """A complaint moved to another state, changed owner, or was escalated as overdue."""

    previous_state: ComplaintState | None = None
    owner_id: str | None = None
    deadline_at: AwareDatetime | None = None
    escalated: bool = False
    scope: ComplaintScope | None = None
    change: Literal["transition", "overdue", "reclassified", "reopened"] | None = None
    close_deadline_at: AwareDatetime | None = None


@event("aftersales.feedback.complaint-closed.v1", Topic.FEEDBACK)
class ComplaintClosed(ComplaintEvent):
    """A complaint was closed."""

    within_deadline: bool


# ---------------------------------------------------------------- aftersales.reports.v1 (metrics)


@event("aftersales.report.inspection-published.v1", Topic.REPORTS)
class InspectionPublished(EventData):
    """A periodic inspection report (巡检) was published."""

    report_id: str
    period: str = Field(description="ISO week (2026-W48) or month (2026-11)")
    period_start: date
    period_end: date
    findings: int = Field(ge=0)
    occurred_at: AwareDatetime
    kind: Literal["week", "month"] | None = Field(default=None, description="weekly or monthly report")
    finding_kinds: list[str] = Field(
        default_factory=list, description="kinds of findings, e.g. grid_under_target, overdue_complaints"
    )
    url: str | None = Field(default=None, description="path of the full report on the metrics service API")
