"""SLA policies (priority x customer tier -> targets in business minutes) and the plan of one SLA clock.

A clock runs from the start of a dispatch round in the grid's business hours, pauses while the work
order waits on the customer (the resolution clock also as the policy's `pause_on` says for on-site
work), warns at 50 % and 75 % of its target and breaches at 100 %. Only the next threshold has a
durable timer; when it fires the following one is scheduled. Pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, Field, field_validator, model_validator

from aftersales.routing.field_holds import CUSTOMER, PauseOn
from aftersales.shared.calendar import BusinessCalendar, Pause, add_business_time
from aftersales.shared.contracts.common import CustomerTier, Priority
from aftersales.shared.contracts.events import SlaClock

THRESHOLDS_PCT = (50, 75, 100)


class SlaTarget(BaseModel):
    """The targets of one priority and customer tier, in business minutes."""

    priority: Priority
    customer_tier: CustomerTier
    first_response_minutes: float = Field(gt=0, le=60 * 24 * 90)
    resolution_minutes: float = Field(gt=0, le=60 * 24 * 365)

    @model_validator(mode="after")
    def _response_before_resolution(self) -> SlaTarget:
        if self.resolution_minutes < self.first_response_minutes:
            raise ValueError("resolution_minutes must not be shorter than first_response_minutes")
        return self


class SlaPolicy(BaseModel):
    """The whole policy table; every priority x tier pair must have a target."""

    targets: list[SlaTarget]
    pause_on: list[PauseOn] = Field(
        default_factory=lambda: [CUSTOMER],
        description="what on-site work pauses the resolution clock: `customer` (a visit window the customer "
        "chose, starting after the due time: customer time from the booking to the window) and `parts` (a "
        "wait for spare parts, until the next check-in or signed report). Default customer only: the parts "
        "stock is ours, so a wait for parts is our delay unless the contract says otherwise. A technician's "
        "pending-customer always pauses. A change re-plans open clocks, past pauses included",
    )

    @field_validator("pause_on")
    @classmethod
    def _distinct(cls, value: list[PauseOn]) -> list[PauseOn]:
        if len(set(value)) != len(value):
            raise ValueError("each value may appear only once")
        return value

    @model_validator(mode="after")
    def _complete(self) -> SlaPolicy:
        seen = {(t.priority, t.customer_tier) for t in self.targets}
        if len(seen) != len(self.targets):
            raise ValueError("each priority x customer_tier pair may appear only once")
        missing = [f"{p.value}/{c.value}" for p in Priority for c in CustomerTier if (p, c) not in seen]
        if missing:
            raise ValueError(f"targets missing for: {', '.join(missing)}")
        return self

    def target(self, priority: Priority, tier: CustomerTier) -> SlaTarget:
        """Return the target of one priority and customer tier."""
        for t in self.targets:
            if t.priority == priority and t.customer_tier == tier:
                return t
        raise LookupError(f"no SLA target for {priority}/{tier}")  # unreachable: the table is complete

    def minutes(self, clock: SlaClock, priority: Priority, tier: CustomerTier) -> float:
        target = self.target(priority, tier)
        if clock is SlaClock.FIRST_RESPONSE:
            return target.first_response_minutes
        return target.resolution_minutes


# Business minutes; gold and key accounts get tighter promises.
_BASE = {
    Priority.P1: (30, 240),
    Priority.P2: (60, 480),
    Priority.P3: (240, 1440),
    Priority.P4: (480, 2880),
}
_TIER_FACTOR = {CustomerTier.STANDARD: 1.0, CustomerTier.GOLD: 0.75, CustomerTier.KEY_ACCOUNT: 0.5}


def default_policy() -> SlaPolicy:
    """Return the default policy table."""
    return SlaPolicy(
        targets=[
            SlaTarget(
                priority=p,
                customer_tier=c,
                first_response_minutes=fr * _TIER_FACTOR[c],
                resolution_minutes=res * _TIER_FACTOR[c],
            )
            for p, (fr, res) in _BASE.items()
            for c in CustomerTier
        ]
    )


@dataclass(frozen=True, slots=True)
class ClockPlan:
    """Where one clock stands: its 100 % due time and the next threshold that needs a timer."""

    due_at: datetime | None  # None while an open pause stops the clock
    next_pct: int | None  # None when every threshold fired
    next_due_at: datetime | None


def plan_clock(
    *,
    started_at: datetime,
    target_minutes: float,
    calendar: BusinessCalendar,
    pauses: Sequence[Pause],
    fired_pct: Sequence[int],
) -> ClockPlan:
    """Return the due time of a clock and its next unfired threshold, in the calendar's business time."""
    due = add_business_time(started_at, target_minutes, calendar, pauses)
    pending = [p for p in THRESHOLDS_PCT if p not in fired_pct]
    if not pending:
        return ClockPlan(due, None, None)
    pct = pending[0]
    next_due = (
        due if pct == 100 else add_business_time(started_at, target_minutes * pct / 100, calendar, pauses)
    )
    return ClockPlan(due, pct, next_due)


def timer_id(ticket_id: str, round_: int, clock: SlaClock, pct: int, generation: int) -> str:
    """Return the durable timer id of one threshold of one clock (a new generation after a recompute)."""
    return f"sla:{ticket_id}:r{round_}:{clock.value}:{pct}:g{generation}"
