"""Follow-up rules: which visits a resolution needs (policy as data), when they are due, and how a visit
moves through `scheduled -> due -> completed | missed | cancelled`. No I/O here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType

from aftersales.shared.calendar import BusinessHours, DoNotDisturb, zone
from aftersales.shared.contracts.common import Category, CustomerTier, Priority
from aftersales.shared.contracts.events import VisitKind, VisitOutcome
from aftersales.shared.errors import Conflict, InvalidRequest


class VisitStatus(StrEnum):
    SCHEDULED = "scheduled"
    DUE = "due"
    COMPLETED = "completed"
    MISSED = "missed"
    CANCELLED = "cancelled"


OPEN_STATUSES = frozenset({VisitStatus.SCHEDULED, VisitStatus.DUE})
# A visit moves at most this far ahead (further is a typo, and the calendar's end overflows).
MAX_RESCHEDULE_AHEAD = timedelta(days=366)


@dataclass(frozen=True, slots=True)
class FollowUpPolicy:
    """The follow-up policy table. Defaults are a realistic desk; every figure is a setting."""

    # Callback (回访电话) within N business hours of the resolution, by priority ...
    callback_business_hours: Mapping[Priority, float] = field(
        default_factory=lambda: MappingProxyType(
            {Priority.P1: 4, Priority.P2: 8, Priority.P3: 16, Priority.P4: 24}
        )
    )
    # ... tightened for some categories (never loosened) ...
    callback_category_cap_hours: Mapping[Category, float] = field(
        default_factory=lambda: MappingProxyType(
            {Category.COMPLAINT: 4, Category.RETURN_REFUND: 8, Category.HARDWARE_FAULT: 16}
        )
    )
    # ... and scaled down for better customer tiers.
    tier_factor: Mapping[CustomerTier, float] = field(
        default_factory=lambda: MappingProxyType(
            {CustomerTier.STANDARD: 1.0, CustomerTier.GOLD: 0.75, CustomerTier.KEY_ACCOUNT: 0.5}
        )
    )
    # The callback becomes due this long after the resolution (let the fix settle first).
    callback_delay: timedelta = timedelta(hours=2)
    # On-site check (上门复查) for these categories, due N business hours after resolution, open for a window.
    on_site_categories: frozenset[Category] = frozenset({Category.HARDWARE_FAULT, Category.INSTALLATION})
    on_site_after_business_hours: float = 16
    on_site_window_business_hours: float = 16
    # Periodic care visits (定期回访) for these tiers.
    care_tiers: frozenset[CustomerTier] = frozenset({CustomerTier.KEY_ACCOUNT})
    care_interval: timedelta = timedelta(days=90)
    care_window_business_hours: float = 40
    # Unreachable customers are retried a bounded number of times.
    max_attempts: int = 3
    retry_after: timedelta = timedelta(hours=4)
    retry_window_business_hours: float = 8
    # An agent may move a visit this many times; the history then stays bounded (see `reschedule`).
    max_reschedules: int = 20
    # A visit still open this long after its deadline is missed.
    grace: timedelta = timedelta(hours=1)
    do_not_disturb: DoNotDisturb = field(default_factory=DoNotDisturb)
    business_hours: BusinessHours = field(default_factory=BusinessHours)
    # A resolution read before its ticket's facts (another topic, so either may come first) waits this
    # long after it happened for them (the customer's time zone, tier, care plan), retried; past that
    # (a replay, facts lost upstream) its visits are planned without them: UTC, standard, no care.
    facts_wait: timedelta = timedelta(minutes=2)


@dataclass(frozen=True, slots=True)
class CustomerFacts:
    """What follow-up knows about a ticket's customer (from intake's events)."""

    customer_id: str | None = None
    tier: CustomerTier = CustomerTier.STANDARD
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class Resolution:
    """A resolved work order, as routing reported it."""

    ticket_id: str
    round: int
    technician_id: str
    grid_id: str
    priority: Priority
    category: Category
    resolved_at: datetime


@dataclass(frozen=True, slots=True)
class VisitPlan:
    kind: VisitKind
    due_at: datetime
    deadline_at: datetime
    agent_id: str | None = None


def callback_hours(
    policy: FollowUpPolicy, priority: Priority, category: Category, tier: CustomerTier
) -> float:
    """Return the callback target in business hours for this priority, category and tier."""
    hours = policy.callback_business_hours[priority]
    cap = policy.callback_category_cap_hours.get(category)
    if cap is not None:
        hours = min(hours, cap)
    return hours * policy.tier_factor.get(tier, 1.0)


def allowed_time(policy: FollowUpPolicy, at: datetime, timezone: str) -> datetime:
    """Return the first instant at or after `at` outside the customer's do-not-disturb hours (UTC)."""
    return policy.do_not_disturb.next_allowed(at, zone(timezone))


def plan_visits(
    policy: FollowUpPolicy, resolution: Resolution, customer: CustomerFacts, *, needs_care: bool
) -> list[VisitPlan]:
    """Return the visits a resolution calls for; `needs_care` is False when a care visit is already open."""
    tz = zone(customer.timezone)
    bh = policy.business_hours
    at = resolution.resolved_at
    plans: list[VisitPlan] = []
    target = callback_hours(policy, resolution.priority, resolution.category, customer.tier)
    due = allowed_time(policy, at + policy.callback_delay, customer.timezone)
    plans.append(VisitPlan(VisitKind.CALLBACK, due, max(due, bh.add(at, target, tz))))
    if resolution.category in policy.on_site_categories:
        due = allowed_time(policy, bh.add(at, policy.on_site_after_business_hours, tz), customer.timezone)
        deadline = bh.add(due, policy.on_site_window_business_hours, tz)
        plans.append(VisitPlan(VisitKind.ON_SITE, due, deadline, agent_id=resolution.technician_id))
    if needs_care and customer.tier in policy.care_tiers:
        plans.append(next_care_visit(policy, at, customer.timezone))
    return plans


def contactable(plans: list[VisitPlan], *, do_not_contact: bool, care_calls: bool) -> list[VisitPlan]:
    """Return the plans the customer's preferences allow: none for a do-not-contact customer, no care
    visits (回访关怀) for one who withdrew consent to care calls."""
    if do_not_contact:
        return []
    return [p for p in plans if care_calls or p.kind != VisitKind.CARE]


def next_care_visit(policy: FollowUpPolicy, after: datetime, timezone: str) -> VisitPlan:
    """Return the periodic care visit that follows `after` by the care interval."""
    due = allowed_time(policy, after + policy.care_interval, timezone)
    return VisitPlan(
        VisitKind.CARE, due, policy.business_hours.add(due, policy.care_window_business_hours, zone(timezone))
    )


@dataclass(frozen=True, slots=True)
class Visit:
    """A follow-up visit as the rules see it."""

    id: str
    ticket_id: str
    kind: VisitKind
    status: VisitStatus
    round: int
    due_at: datetime
    deadline_at: datetime
    timezone: str = "UTC"
    attempt: int = 1
    seq: int = 1
    grid_id: str | None = None
    technician_id: str | None = None
    agent_id: str | None = None
    customer_id: str | None = None
    care_n: int | None = None
    outcome: VisitOutcome | None = None
    customer_tier: CustomerTier = CustomerTier.STANDARD

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def reschedules(self) -> int:
        """How often an agent moved this visit: every schedule (`seq`) is the first, a retry or a move."""
        return self.seq - self.attempt


def visit_id_for(ticket_id: str, round_: int, kind: VisitKind, customer_id: str | None, care_n: int) -> str:
    """Return a deterministic visit id, so a redelivered resolution finds the visit it already made."""
    if kind == VisitKind.CARE:
        return f"V-care-{customer_id}-{care_n}"
    return f"V-{ticket_id}-r{round_}-{kind.value}"


def new_visit(plan: VisitPlan, res: Resolution, customer: CustomerFacts, *, care_n: int = 1) -> Visit:
    """Return the scheduled visit for one plan of a resolution."""
    return Visit(
        id=visit_id_for(res.ticket_id, res.round, plan.kind, customer.customer_id, care_n),
        ticket_id=res.ticket_id,
        kind=plan.kind,
        status=VisitStatus.SCHEDULED,
        round=res.round,
        due_at=plan.due_at,
        deadline_at=plan.deadline_at,
        timezone=customer.timezone,
        grid_id=res.grid_id,
        technician_id=res.technician_id,
        agent_id=plan.agent_id,
        customer_id=customer.customer_id,
        care_n=care_n if plan.kind == VisitKind.CARE else None,
        customer_tier=customer.tier,
    )


def following_care(policy: FollowUpPolicy, care: Visit, now: datetime) -> Visit:
    """Return the care visit that follows a closed one, one care interval later."""
    plan = next_care_visit(policy, now, care.timezone)
    n = (care.care_n or 1) + 1
    return replace(
        care,
        id=visit_id_for(care.ticket_id, care.round, VisitKind.CARE, care.customer_id, n),
        status=VisitStatus.SCHEDULED,
        due_at=plan.due_at,
        deadline_at=plan.deadline_at,
        attempt=1,
        seq=1,
        agent_id=None,
        care_n=n,
        outcome=None,
    )


class Effect(StrEnum):
    """What a decision means for the outside world (turned into events by the store)."""

    COMPLETED = "completed"
    REOPEN_REQUESTED = "reopen_requested"
    RESCHEDULED = "rescheduled"
    MISSED = "missed"
    NEXT_CARE = "next_care"


@dataclass(frozen=True, slots=True)
class Decision:
    visit: Visit
    effects: tuple[Effect, ...]


def _require_open(visit: Visit, action: str) -> None:
    if not visit.is_open:
        raise Conflict(f"visit {visit.id} is {visit.status.value}; cannot {action}")


def record_outcome(policy: FollowUpPolicy, visit: Visit, outcome: VisitOutcome, now: datetime) -> Decision:
    """Return the visit after an agent recorded the outcome of a contact attempt."""
    _require_open(visit, "record an outcome")
    care = (Effect.NEXT_CARE,) if visit.kind == VisitKind.CARE else ()
    if outcome == VisitOutcome.CONFIRMED_RESOLVED:
        done = replace(visit, status=VisitStatus.COMPLETED, outcome=outcome)
        return Decision(done, (Effect.COMPLETED, *care))
    if outcome == VisitOutcome.NOT_RESOLVED:
        done = replace(visit, status=VisitStatus.COMPLETED, outcome=outcome)
        reopen = () if visit.kind == VisitKind.CARE else (Effect.REOPEN_REQUESTED,)
        return Decision(done, (Effect.COMPLETED, *reopen, *care))
    if visit.attempt >= policy.max_attempts:
        gone = replace(visit, status=VisitStatus.MISSED, outcome=outcome)
        return Decision(gone, (Effect.MISSED, *care))
    due = allowed_time(policy, now + policy.retry_after, visit.timezone)
    deadline = max(
        visit.deadline_at,
        policy.business_hours.add(due, policy.retry_window_business_hours, zone(visit.timezone)),
    )
    retry = replace(
        visit,
        status=VisitStatus.SCHEDULED,
        due_at=due,
        deadline_at=deadline,
        attempt=visit.attempt + 1,
        seq=visit.seq + 1,
    )
    return Decision(retry, (Effect.RESCHEDULED,))


def reschedule(
    policy: FollowUpPolicy, visit: Visit, due_at: datetime, now: datetime, agent_id: str | None = None
) -> Visit:
    """Return the visit moved to `due_at` (pushed out of do-not-disturb hours); 409 when it is closed
    or was moved `max_reschedules` times already.

    Each move appends to the visit's history; outcomes are bounded by `max_attempts`, moves by this cap,
    so a visit's history never grows without limit."""
    _require_open(visit, "reschedule")
    if visit.reschedules >= policy.max_reschedules:
        raise Conflict(
            f"visit {visit.id} was rescheduled {visit.reschedules} times, the most its history keeps "
            f"({policy.max_reschedules}); record an outcome instead",
            field="history",
        )
    if due_at.tzinfo is None:
        raise InvalidRequest("due_at must carry a time zone offset", field="due_at")
    if due_at < now - timedelta(minutes=1):
        raise InvalidRequest("due_at must not be in the past", field="due_at")
    if due_at > now + MAX_RESCHEDULE_AHEAD:
        raise InvalidRequest(
            f"due_at must be within {MAX_RESCHEDULE_AHEAD.days} days from now", field="due_at"
        )
    due = allowed_time(policy, due_at.astimezone(UTC), visit.timezone)
    window = visit.deadline_at - visit.due_at
    return replace(
        visit,
        status=VisitStatus.SCHEDULED,
        due_at=due,
        deadline_at=max(visit.deadline_at, due + window),
        seq=visit.seq + 1,
        agent_id=agent_id or visit.agent_id,
    )


def becomes_due(visit: Visit, seq: int) -> bool:
    """True when the due timer of schedule `seq` should move the visit to `due`."""
    return visit.status == VisitStatus.SCHEDULED and visit.seq == seq


def goes_missed(visit: Visit, seq: int) -> bool:
    """True when the overdue timer of schedule `seq` should mark the visit missed."""
    return visit.is_open and visit.seq == seq


def overdue_at(policy: FollowUpPolicy, visit: Visit) -> datetime:
    """Return when an open visit counts as missed: its deadline plus the grace period."""
    return visit.deadline_at + policy.grace
