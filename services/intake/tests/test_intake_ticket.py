"""The ticket aggregate's decisions (cancel, the customer's reply, other services' events) and its
stored form, without servers."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from aftersales.intake import domain, timeline
from aftersales.intake.domain import Appended, Ticket, TicketStatus
from aftersales.intake.rules import Classification
from aftersales.intake.store import document_of, ticket_of
from aftersales.shared.contracts.common import Category, Priority
from aftersales.shared.contracts.events import TicketCancelled, TicketClosed, TicketReopened
from aftersales.shared.contracts.requests import TicketRequest
from aftersales.shared.errors import Conflict

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def opened(**changes: object) -> Ticket:
    request = TicketRequest.model_validate(
        {
            "channel": "web",
            "customer": {"name": "Han Meimei", "email": "han@example.com", "region_code": "310000"},
            "product": {"device_type": "washer", "serial": "W-1"},
            "title": "Drum is broken",
            "description": "",
        }
    )
    ticket = domain.new_ticket(
        request,
        ticket_id="T-1",
        customer_id="C-1",
        decided=Classification(Category.HARDWARE_FAULT, Priority.P3, "v1", ("kw-hardware",)),
        warranty=None,
        caller="http:web",
        source="http",
        key=None,
        fingerprint="f",
        now=T0,
    )
    return replace(ticket, appended=Appended(), **changes)  # type: ignore[arg-type]


def happened(kind: str, event_id: str, at: datetime, **data: object) -> timeline.Downstream:
    return timeline.downstream_of(
        ce_type=f"aftersales.{kind}.v1",
        ce_source="/aftersales/routing",
        ce_id=event_id,
        ce_time=at,
        data={"ticket_id": "T-1", "occurred_at": at.isoformat(), **data},
    )


def from_followup(kind: str, event_id: str, **data: object) -> timeline.Downstream:
    return timeline.downstream_of(
        ce_type=f"aftersales.followup.{kind}.v1",
        ce_source="/aftersales/followup",
        ce_id=event_id,
        ce_time=T0,
        data={"ticket_id": "T-1", **data},
    )


def test_a_ticket_survives_its_stored_form() -> None:
    ticket = replace(
        opened(),
        assignment_mark=(2, T0),
        pending_followup={"action": "close", "reason": "confirmed_resolved"},
        request_offsets={"0": 7},
    )
    doc = document_of(ticket)
    assert doc["_id"] == "T-1" and doc["status"] == "new" and "resolved_at" not in doc
    assert ticket_of({**doc, "applied_events": ["e-1"]}) == replace(ticket, applied_events=frozenset({"e-1"}))


def test_cancel_releases_the_storm_and_refuses_a_resolved_ticket() -> None:
    decision = domain.cancel(opened(), reason="not needed", now=T0)
    assert decision.state.status is TicketStatus.CANCELLED and decision.state.cancel_reason == "not needed"
    assert decision.state.storm_key == domain.released_storm_key("T-1")
    assert [type(e) for e in decision.events] == [TicketCancelled]
    with pytest.raises(Conflict):
        domain.cancel(opened(status=TicketStatus.RESOLVED), reason="late", now=T0)


def test_the_customers_reply_is_kept_redacted() -> None:
    waiting = opened(status=TicketStatus.PENDING_CUSTOMER)
    decision = domain.customer_replied(waiting, message="call me on +8613800138000", now=T0)
    assert decision.state.status is TicketStatus.IN_PROGRESS
    [said] = decision.state.appended.customer_messages
    assert "13800138000" not in said["message"]
    with pytest.raises(Conflict):
        domain.customer_replied(opened(), message=None, now=T0)


def test_an_assignment_moves_the_ticket_once_and_an_older_one_only_notes_the_timeline() -> None:
    assigned = happened("assignment.assigned", "e-1", T0, round=2, technician_id="tech-1")
    decision = timeline.apply_downstream(opened(), assigned, now=T0)
    after = decision.state
    assert (after.status, after.technician_id, decision.moved_to) == (
        TicketStatus.ASSIGNED,
        "tech-1",
        TicketStatus.ASSIGNED,
    )
    assert after.appended.applied_events == ("e-1",) and decision.changed

    stored = replace(after, appended=Appended(), applied_events=frozenset({"e-1"}))
    assert not timeline.apply_downstream(stored, assigned, now=T0).changed  # a redelivery

    older = happened("assignment.started", "e-0", T0 - timedelta(minutes=1), round=1, technician_id="x")
    stale = timeline.apply_downstream(stored, older, now=T0)
    assert stale.state.status is TicketStatus.ASSIGNED and stale.moved_to is None and stale.changed


def test_a_followup_that_overtook_the_resolution_applies_with_it() -> None:
    confirmed = from_followup("completed", "f-1", outcome="confirmed_resolved")
    waiting = timeline.apply_downstream(opened(status=TicketStatus.IN_PROGRESS), confirmed, now=T0).state
    assert waiting.status is TicketStatus.IN_PROGRESS and waiting.pending_followup is not None

    resolved = happened("assignment.resolved", "e-9", T0, round=1, technician_id="tech-1")
    decision = timeline.apply_downstream(replace(waiting, appended=Appended()), resolved, now=T0)
    assert decision.state.status is TicketStatus.CLOSED and decision.moved_to is TicketStatus.CLOSED
    assert decision.state.resolved_at == T0 and decision.state.pending_followup is None
    assert [type(e) for e in decision.events] == [TicketClosed]


def test_a_reopen_request_reopens_a_resolved_ticket() -> None:
    reopen = from_followup("reopen-requested", "f-2", reason="still broken")
    resolved = opened(status=TicketStatus.RESOLVED, technician_id="tech-1", last_technician_id="tech-1")
    decision = timeline.apply_downstream(resolved, reopen, now=T0)
    after = decision.state
    assert (after.status, after.reopen_count, after.technician_id) == (TicketStatus.REOPENED, 1, None)
    [event] = decision.events
    assert isinstance(event, TicketReopened)
    assert event.previous_technician_id == "tech-1" and event.reopen_count == 1


def test_a_hand_back_to_the_queue_puts_the_ticket_back_to_waiting_unless_it_is_past_that() -> None:
    handed_back = happened("assignment.queued", "q-1", T0, round=2, reason="handed back")
    reassigned = opened(status=TicketStatus.IN_PROGRESS, technician_id="tech-1", reopen_count=1)
    after = timeline.apply_downstream(reassigned, handed_back, now=T0).state
    assert (after.status, after.technician_id, after.last_technician_id) == (
        TicketStatus.REOPENED,  # a reopened ticket waits as reopened, not as new
        None,
        None,
    )
    [entry] = after.appended.timeline
    assert entry["type"] == "assignment.queued" and entry["reason"] == "handed back"

    for status in (TicketStatus.NEW, TicketStatus.RESOLVED, TicketStatus.CLOSED):
        kept = timeline.apply_downstream(opened(status=status, technician_id="t"), handed_back, now=T0)
        assert (kept.state.status, kept.state.technician_id, kept.moved_to) == (status, "t", None)
