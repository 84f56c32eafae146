"""The events feedback publishes on `aftersales.feedback.v1` (pure: models, no I/O)."""

from __future__ import annotations

from datetime import datetime

from aftersales.feedback.domain import Complaint, within_deadline
from aftersales.shared.contracts.events import (
    ComplaintClosed,
    ComplaintOpened,
    ComplaintState,
    ComplaintUpdated,
)


def opened(c: Complaint, now: datetime, survey_id: str | None = None) -> ComplaintOpened:
    return ComplaintOpened(
        complaint_id=c.id,
        ticket_id=c.ticket_id,
        state=c.state,
        occurred_at=now,
        source=c.source.value,
        scope=c.scope,
        category=c.category,
        deadline_at=c.deadline_at,
        product_model=c.product_model,
        owner_id=c.owner_id,
        ack_deadline_at=c.step_deadline_at,
        survey_id=survey_id,
    )


def updated(
    c: Complaint,
    now: datetime,
    *,
    change: str,
    previous: ComplaintState | None = None,
    escalated: bool = False,
) -> ComplaintUpdated:
    return ComplaintUpdated(
        complaint_id=c.id,
        ticket_id=c.ticket_id,
        state=c.state,
        occurred_at=now,
        previous_state=previous,
        owner_id=c.owner_id,
        deadline_at=c.step_deadline_at,
        escalated=escalated,
        scope=c.scope,
        change=change,  # type: ignore[arg-type]
        close_deadline_at=c.deadline_at,
    )


def closed(c: Complaint, now: datetime) -> ComplaintClosed:
    return ComplaintClosed(
        complaint_id=c.id,
        ticket_id=c.ticket_id,
        state=c.state,
        occurred_at=now,
        within_deadline=within_deadline(c),
    )
