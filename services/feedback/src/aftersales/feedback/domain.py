"""Feedback rules: the complaint workflow (投诉) with owners, deadlines and escalation, common-cause (共性)
versus individual (个性) classification, and when a survey may be answered. No I/O here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType

from aftersales.feedback.tokens import ExpiredToken, InvalidToken
from aftersales.shared.contracts.common import Category
from aftersales.shared.contracts.events import ComplaintScope, ComplaintState
from aftersales.shared.errors import Conflict, InvalidRequest

S = ComplaintState

# The complaint workflow. Besides the straight line, a proposal or a reply the customer rejects goes back
# to investigating, and a closed complaint can be reopened (closed -> investigating).
TRANSITIONS: Mapping[ComplaintState, frozenset[ComplaintState]] = MappingProxyType(
    {
        S.RECEIVED: frozenset({S.INVESTIGATING}),
        S.INVESTIGATING: frozenset({S.RESOLUTION_PROPOSED}),
        S.RESOLUTION_PROPOSED: frozenset({S.REPLIED, S.INVESTIGATING}),
        S.REPLIED: frozenset({S.CLOSED, S.INVESTIGATING}),
        S.CLOSED: frozenset({S.INVESTIGATING}),
    }
)


class ComplaintSource(StrEnum):
    API = "api"
    CHANNEL = "channel"
    LOW_CSAT = "low_csat"


@dataclass(frozen=True, slots=True)
class ComplaintPolicy:
    """Deadlines per step and the common-cause rule; defaults: acknowledge in 24 h, close in 7 days."""

    step_deadlines: Mapping[ComplaintState, timedelta] = field(
        default_factory=lambda: MappingProxyType(
            {
                S.RECEIVED: timedelta(hours=24),  # acknowledge: someone owns and investigates it
                S.INVESTIGATING: timedelta(days=3),
                S.RESOLUTION_PROPOSED: timedelta(days=2),
                S.REPLIED: timedelta(days=3),  # the customer's answer to the reply
            }
        )
    )
    close_within: timedelta = timedelta(days=7)
    common_cause_threshold: int = 3  # this many complaints about one product model/category ...
    common_cause_window: timedelta = timedelta(days=30)  # ... within this window are common-cause
    # Workflow steps one complaint may take (reopen cycles included). Every step, and every escalation
    # (one per step and cycle at most), appends to its history: this cap keeps the document bounded.
    max_steps: int = 50


@dataclass(frozen=True, slots=True)
class Complaint:
    id: str
    state: ComplaintState
    source: ComplaintSource
    scope: ComplaintScope
    opened_at: datetime
    deadline_at: datetime
    step_deadline_at: datetime | None
    ticket_id: str | None = None
    category: Category | None = None
    product_model: str | None = None
    owner_id: str | None = None
    seq: int = 1  # bumps on every step: a step timer acts only on its own step
    cycle: int = 0  # bumps on every reopen: a close-deadline timer acts only on its own cycle
    escalated: bool = False
    closed_at: datetime | None = None

    @property
    def steps(self) -> int:
        """Workflow steps taken since it was opened."""
        return self.seq - 1


def can_transition(source: ComplaintState, target: ComplaintState) -> bool:
    return target in TRANSITIONS[source]


def classification_key(category: Category | None, product_model: str | None) -> str | None:
    """Return what makes complaints "the same" for the common-cause rule: the product model, else the
    category (the complaint channel's own category says nothing about the product)."""
    if product_model:
        return f"model:{product_model.strip().lower()}"
    if category is not None and category not in {Category.COMPLAINT, Category.OTHER}:
        return f"category:{category.value}"
    return None


def classify(policy: ComplaintPolicy, key: str | None, similar_in_window: int) -> ComplaintScope:
    """Return common_cause when this complaint makes `threshold` of its kind within the window."""
    if key is not None and similar_in_window + 1 >= policy.common_cause_threshold:
        return ComplaintScope.COMMON_CAUSE
    return ComplaintScope.INDIVIDUAL


def open_complaint(
    policy: ComplaintPolicy,
    *,
    complaint_id: str,
    source: ComplaintSource,
    scope: ComplaintScope,
    now: datetime,
    ticket_id: str | None = None,
    category: Category | None = None,
    product_model: str | None = None,
    owner_id: str | None = None,
) -> Complaint:
    """Return a new complaint in `received`, with its acknowledge and close deadlines."""
    return Complaint(
        id=complaint_id,
        state=S.RECEIVED,
        source=source,
        scope=scope,
        opened_at=now,
        deadline_at=now + policy.close_within,
        step_deadline_at=now + policy.step_deadlines[S.RECEIVED],
        ticket_id=ticket_id,
        category=category,
        product_model=product_model,
        owner_id=owner_id,
    )


def transition(
    policy: ComplaintPolicy, complaint: Complaint, target: ComplaintState, owner_id: str | None, now: datetime
) -> Complaint:
    """Return the complaint moved to `target`; 409 when the workflow does not allow it, or when the
    complaint has taken `max_steps` steps already (its history is full)."""
    if not can_transition(complaint.state, target):
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[complaint.state])) or "none"
        raise Conflict(
            f"complaint {complaint.id} is {complaint.state.value}; cannot move to {target.value} "
            f"(allowed: {allowed})",
            field="to",
        )
    if complaint.steps >= policy.max_steps:
        raise Conflict(
            f"complaint {complaint.id} has taken {complaint.steps} workflow steps, the most its history "
            f"keeps ({policy.max_steps}); open a new complaint that refers to it",
            field="history",
        )
    owner = owner_id or complaint.owner_id
    if owner is None:
        raise InvalidRequest("an owner is needed from investigating on: give owner_id", field="owner_id")
    step_deadline = None if target == S.CLOSED else now + policy.step_deadlines[target]
    if complaint.state == S.CLOSED:  # reopen: a fresh close deadline, escalation starts over
        return replace(
            complaint,
            state=target,
            owner_id=owner,
            step_deadline_at=step_deadline,
            deadline_at=now + policy.close_within,
            seq=complaint.seq + 1,
            cycle=complaint.cycle + 1,
            escalated=False,
            closed_at=None,
        )
    return replace(
        complaint,
        state=target,
        owner_id=owner,
        step_deadline_at=step_deadline,
        seq=complaint.seq + 1,
        closed_at=now if target == S.CLOSED else None,
    )


def step_overdue(complaint: Complaint, seq: int) -> bool:
    """True when the step timer of step `seq` finds the complaint still in that step."""
    return complaint.seq == seq and complaint.state != S.CLOSED


def close_overdue(complaint: Complaint, cycle: int) -> bool:
    """True when the close-deadline timer of `cycle` finds the complaint still open."""
    return complaint.cycle == cycle and complaint.state != S.CLOSED


def within_deadline(complaint: Complaint) -> bool:
    return complaint.closed_at is not None and complaint.closed_at <= complaint.deadline_at


# ---------------------------------------------------------------- surveys


class SurveyStatus(StrEnum):
    SENT = "sent"
    SUBMITTED = "submitted"


class SurveyReused(Conflict):
    code = "survey_already_answered"


class LinkState(StrEnum):
    """What a survey link shows its customer now (the survey page's states)."""

    OPEN = "open"
    ANSWERED = "answered"  # 409 on submit
    EXPIRED = "expired"  # 410
    INVALID = "invalid"  # 403: forged, tampered, malformed, or no such survey


# The refusals of an answer, by error code, as the link states a customer sees before answering.
LINK_STATE_OF_REFUSAL: Mapping[str, LinkState] = MappingProxyType(
    {
        SurveyReused.code: LinkState.ANSWERED,
        ExpiredToken.code: LinkState.EXPIRED,
        InvalidToken.code: LinkState.INVALID,
    }
)


def check_answerable(status: SurveyStatus, expires_at: datetime, now: datetime) -> None:
    """Raise when a survey cannot take an answer: 409 answered already, 410 expired."""
    if status == SurveyStatus.SUBMITTED:
        raise SurveyReused("this survey has already been answered; a link works once")
    if now >= expires_at:
        raise ExpiredToken("this survey link has expired")


def opens_complaint(csat: int, threshold: int) -> bool:
    """True when a CSAT answer is low enough to open a complaint automatically."""
    return csat <= threshold


@dataclass(frozen=True, slots=True)
class SurveySummary:
    sent: int
    submitted: int
    csat_sum: int
    csat_count: int
    promoters: int
    detractors: int
    nps_count: int

    @property
    def response_rate(self) -> float | None:
        return round(self.submitted / self.sent, 4) if self.sent else None

    @property
    def csat_average(self) -> float | None:
        return round(self.csat_sum / self.csat_count, 3) if self.csat_count else None

    @property
    def nps(self) -> float | None:
        """Net promoter score: % promoters (9-10) minus % detractors (0-6), -100..100."""
        if not self.nps_count:
            return None
        return round(100 * (self.promoters - self.detractors) / self.nps_count, 1)


def summarize(sent: int, answers: list[tuple[int, int | None]]) -> SurveySummary:
    """Return counts and sums of (csat, nps) answers; averages are derived, never stored."""
    nps = [n for _, n in answers if n is not None]
    return SurveySummary(
        sent=sent,
        submitted=len(answers),
        csat_sum=sum(c for c, _ in answers),
        csat_count=len(answers),
        promoters=sum(1 for n in nps if n >= 9),
        detractors=sum(1 for n in nps if n <= 6),
        nps_count=len(nps),
    )
