"""Intake's pure rules: storm window edges, warranty, customer identity, lifecycle mapping, cursors."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aftersales.intake import domain, identity, timeline, views
from aftersales.intake.domain import TicketStatus
from aftersales.shared.contracts.requests import CustomerIn, ProductIn, requested_ticket_id
from aftersales.shared.errors import InvalidRequest

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("offset", "joins"),
    [
        (timedelta(0), True),
        (timedelta(seconds=899, microseconds=999_999), True),
        (timedelta(seconds=900), True),  # exactly at the edge: still the same storm
        (timedelta(seconds=900, milliseconds=1), False),
        (timedelta(hours=2), False),
        (timedelta(seconds=-3600), True),  # a late alert observed before the last one joins
    ],
)
def test_storm_window_edges(offset: timedelta, joins: bool) -> None:
    assert domain.joins_storm(T0, T0 + offset, 900) is joins


@given(st.floats(min_value=1, max_value=86_400), st.floats(min_value=0, max_value=200_000))
def test_storm_window_slides_from_the_last_alert(window_s: float, gap_s: float) -> None:
    gap = timedelta(seconds=gap_s)
    assert domain.joins_storm(T0, T0 + gap, window_s) is (gap <= timedelta(seconds=window_s))


def test_storm_keys_separate_devices_and_faults_and_release_uniquely() -> None:
    keys = [domain.storm_key("SN1", "E1"), domain.storm_key("SN1", "E2"), domain.storm_key("SN2", "E1")]
    assert len(set(keys)) == 3
    assert domain.storm_key("SN1", "E1") == domain.storm_key("SN1", "E1")
    assert domain.released_storm_key("T-1") != domain.released_storm_key("T-2")
    assert not domain.released_storm_key("T-1").startswith("storm:")


@pytest.mark.parametrize(
    ("purchased", "months", "today", "expected"),
    [
        (date(2025, 1, 31), 1, date(2025, 2, 28), True),  # clamped to the end of February
        (date(2025, 1, 31), 1, date(2025, 3, 1), False),
        (date(2024, 11, 24), 24, date(2026, 11, 24), True),  # last day of warranty
        (date(2024, 11, 24), 24, date(2026, 11, 25), False),
        (date(2026, 12, 1), 24, date(2026, 11, 24), True),  # future purchase date: a typo, not expired
        (date(2026, 1, 1), 0, date(2026, 1, 2), False),
    ],
)
def test_warranty(purchased: date, months: int, today: date, expected: bool) -> None:
    product = ProductIn(device_type="tv", purchase_date=purchased, warranty_months=months)
    assert domain.under_warranty(product, today) is expected


def test_warranty_unknown_without_purchase_date() -> None:
    assert domain.under_warranty(ProductIn(device_type="tv"), date(2026, 1, 1)) is None


KEY = b"k" * 32


def test_same_person_maps_to_the_same_customer() -> None:
    a = CustomerIn(name="A", email="Li.Lei@Example.com", region_code="310000")
    b = CustomerIn(name="A B", email=" li.lei@example.com ", region_code="110000")
    c = CustomerIn(name="A", phone="+86 138 0013 8000", region_code="310000")
    d = CustomerIn(name="A", phone="+8613800138000", region_code="310000")
    assert identity.customer_id_for(a, KEY) == identity.customer_id_for(b, KEY)
    assert identity.customer_id_for(c, KEY) == identity.customer_id_for(d, KEY)
    assert identity.customer_id_for(a, KEY) != identity.customer_id_for(c, KEY)
    assert identity.customer_id_for(CustomerIn(id="CUST-7", region_code="310000"), KEY) == "CUST-7"
    # keyed: without the key nobody computes a customer's id from a phone or an e-mail
    assert identity.customer_id_for(c, b"other-key" * 4) != identity.customer_id_for(c, KEY)
    assert identity.customer_id_for(c, KEY) != identity.legacy_customer_id(c)


def test_idempotency_keys_are_scoped_to_the_caller() -> None:
    assert requested_ticket_id("http:web", "k") == requested_ticket_id("http:web", "k")
    assert requested_ticket_id("http:web", "k") != requested_ticket_id("http:phone", "k")
    assert identity.new_ticket_id() != identity.new_ticket_id()


@pytest.mark.parametrize(
    ("current", "kind", "expected"),
    [
        (TicketStatus.NEW, "assignment.assigned", TicketStatus.ASSIGNED),
        (TicketStatus.ASSIGNED, "assignment.accepted", TicketStatus.IN_PROGRESS),
        (TicketStatus.ASSIGNED, "assignment.started", TicketStatus.IN_PROGRESS),
        (TicketStatus.IN_PROGRESS, "assignment.pending", TicketStatus.PENDING_CUSTOMER),
        (TicketStatus.IN_PROGRESS, "assignment.escalated", TicketStatus.ESCALATED),
        (TicketStatus.ESCALATED, "assignment.reassigned", TicketStatus.ASSIGNED),
        (TicketStatus.IN_PROGRESS, "assignment.resolved", TicketStatus.RESOLVED),
        (TicketStatus.REOPENED, "assignment.assigned", TicketStatus.ASSIGNED),
        (TicketStatus.IN_PROGRESS, "assignment.sla-warning", None),
        (TicketStatus.NEW, "assignment.queued", None),
        (TicketStatus.CANCELLED, "assignment.assigned", None),
        (TicketStatus.CLOSED, "assignment.resolved", None),
    ],
)
def test_assignment_events_move_the_status(
    current: TicketStatus, kind: str, expected: TicketStatus | None
) -> None:
    assert timeline.assignment_transition(current, kind, {"technician_id": "tech-1"}).status is expected


def test_escalation_keeps_or_moves_the_technician() -> None:
    kept = timeline.assignment_transition(
        TicketStatus.IN_PROGRESS, "assignment.escalated", {"level": "tier2"}
    )
    moved = timeline.assignment_transition(
        TicketStatus.IN_PROGRESS, "assignment.escalated", {"to_technician_id": "tech-2"}
    )
    assert kept.technician_id is None and moved.technician_id == "tech-2"


def test_who_may_do_what() -> None:
    assert timeline.can_reopen(TicketStatus.RESOLVED) and timeline.can_reopen(TicketStatus.CLOSED)
    assert not timeline.can_reopen(TicketStatus.CANCELLED) and not timeline.can_reopen(
        TicketStatus.IN_PROGRESS
    )
    assert timeline.can_close_confirmed(TicketStatus.RESOLVED)
    assert not timeline.can_close_confirmed(TicketStatus.REOPENED)
    assert [s for s in TicketStatus if not domain.can_cancel(s)] == [
        TicketStatus.RESOLVED,
        TicketStatus.CLOSED,
        TicketStatus.CANCELLED,
    ]
    assert [s for s in TicketStatus if domain.can_customer_reply(s)] == [TicketStatus.PENDING_CUSTOMER]


def test_timeline_entry_keeps_ids_and_outcomes_only() -> None:
    entry = timeline.timeline_entry(
        at=T0,
        kind=timeline.short_type("aftersales.feedback.survey-submitted.v1"),
        source=timeline.source_service("/aftersales/feedback"),
        data={
            "csat": 4,
            "technician_id": "tech-1",
            "comment": "call me on +8613800138000",
            "nested": {"x": 1},
        },
        event_id="e-1",
    )
    assert entry == {
        "at": T0,
        "type": "feedback.survey-submitted",
        "source": "feedback",
        "event_id": "e-1",
        "csat": 4,
        "technician_id": "tech-1",
    }


def test_cursor_round_trip_and_garbage() -> None:
    when = datetime(2026, 11, 24, 8, 0, 0, 123000, tzinfo=UTC)
    assert views.decode_cursor(views.encode_cursor(when, "T-9")) == (when, "T-9")
    for garbage in ("x", "bm90IGpzb24", views.encode_cursor(when, "T")[:-3] + "!!"):
        with pytest.raises(InvalidRequest) as caught:
            views.decode_cursor(garbage)
        assert caught.value.field == "cursor"


def test_edges_compare_at_the_precision_the_database_keeps() -> None:
    last = domain.stored_precision(T0 + timedelta(microseconds=42_999))
    assert last == T0 + timedelta(milliseconds=42)
    edge = T0 + timedelta(microseconds=42_999) + timedelta(seconds=900)
    assert domain.joins_storm(last, domain.stored_precision(edge), 900)


def test_followup_actions() -> None:
    assert timeline.followup_action("followup.reopen-requested", {"reason": "still broken"}) == {
        "action": "reopen",
        "reason": "still broken",
    }
    assert timeline.followup_action("followup.completed", {"outcome": "confirmed_resolved"}) == {
        "action": "close",
        "reason": "confirmed_resolved",
    }
    assert timeline.followup_action("followup.completed", {"outcome": "not_resolved"}) is None
    assert timeline.followup_action("followup.scheduled", {}) is None


def test_a_followup_can_only_overtake_a_resolution_still_in_flight() -> None:
    waiting = [s for s in TicketStatus if timeline.may_overtake(s)]
    assert waiting == [
        TicketStatus.NEW,
        TicketStatus.ASSIGNED,
        TicketStatus.IN_PROGRESS,
        TicketStatus.PENDING_CUSTOMER,
        TicketStatus.ESCALATED,
    ]
