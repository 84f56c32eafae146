"""Templates in Chinese and English, their parameters, and which events call for which messages."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aftersales.notify import notices
from aftersales.notify.domain import Language
from aftersales.notify.notices import TicketCopy
from aftersales.notify.templates import DEFAULTS, PARAMS, checked
from aftersales.shared.contracts.common import Category, Channel, Priority
from aftersales.shared.contracts.events import (
    ComplaintState,
    ComplaintUpdated,
    SlaBreached,
    SlaClock,
    SlaWarning,
    TicketCreated,
    WorkOrderAssigned,
)
from aftersales.shared.errors import InvalidRequest

NOW = datetime(2026, 11, 30, 4, 0, tzinfo=UTC)


def test_every_template_exists_in_both_languages_and_uses_only_its_parameters() -> None:
    for language in Language:
        assert set(DEFAULTS[language]) == set(PARAMS), language
        for key, template in DEFAULTS[language].items():
            checked(key, language, template.subject, template.body)  # raises on an unknown ${name}


def test_the_acknowledgement_carries_the_ticket_number_in_both_languages() -> None:
    zh = DEFAULTS[Language.ZH]["ticket_acknowledged"].render({"ticket_id": "T-42"})
    en = DEFAULTS[Language.EN]["ticket_acknowledged"].render({"ticket_id": "T-42"})
    assert "T-42" in zh.subject and "工单" in zh.subject and "T-42" in zh.body
    assert en.subject == "We received your request (ticket T-42)"
    assert en.text.startswith(en.subject + "\n")


def test_a_missing_parameter_renders_as_a_dash_and_an_edit_is_checked() -> None:
    assert (
        DEFAULTS[Language.EN]["complaint_closed"].render({"complaint_id": "K-1"}).body.count("ticket -") == 1
    )
    with pytest.raises(InvalidRequest) as bad:
        checked("ticket_acknowledged", Language.EN, "Ticket ${ticket_id}", "Dear ${customer_name}")
    assert bad.value.field == "body" and "customer_name" in bad.value.message
    with pytest.raises(InvalidRequest) as lone:
        checked("ticket_acknowledged", Language.EN, "Costs $ 5", "x")
    assert lone.value.field == "subject"
    with pytest.raises(InvalidRequest) as unknown:
        checked("nope", Language.EN, "x", "y")
    assert unknown.value.field == "key"


def test_events_become_notices_for_the_right_recipients() -> None:
    created = TicketCreated(
        ticket_id="T-1",
        channel=Channel.WEB,
        category=Category.HARDWARE_FAULT,
        priority=Priority.P2,
        customer_id="C-9",
        region_code="310000",
        device_type="ac",
        created_at=NOW,
        rules_version="t",
    )
    [ack] = notices.acknowledgement(created)
    assert (ack.recipient_id, ack.template, ack.params) == (
        "customer:C-9",
        "ticket_acknowledged",
        {"ticket_id": "T-1"},
    )

    assigned = WorkOrderAssigned(
        ticket_id="T-1",
        grid_id="g-1",
        occurred_at=NOW,
        technician_id="tech-1",
        tier=1,
        via="direct",
        priority=Priority.P2,
        category=Category.HARDWARE_FAULT,
        resolution_due=NOW,
    )
    [job] = notices.new_assignment(assigned)
    assert job.recipient_id == "staff:tech-1" and job.params["resolution_due"] == "2026-11-30 04:00 UTC"

    warn = SlaWarning(
        ticket_id="T-1",
        grid_id="g-1",
        occurred_at=NOW,
        clock=SlaClock.RESOLUTION,
        threshold_pct=75,
        due_at=NOW,
        technician_id="tech-1",
    )
    assert [n.recipient_id for n in notices.sla_warning(warn)] == ["staff:tech-1"]
    breach = SlaBreached(
        ticket_id="T-1", grid_id="g-1", occurred_at=NOW, clock=SlaClock.RESOLUTION, due_at=NOW
    )
    assert [n.recipient_id for n in notices.sla_breached(breach)] == ["grid:g-1"]


def test_an_overdue_complaint_goes_to_its_owner_and_the_grid_supervisor_not_the_customer() -> None:
    ticket = TicketCopy("T-1", customer_id="C-9", grid_id="g-1")
    overdue = ComplaintUpdated(
        complaint_id="K-1",
        ticket_id="T-1",
        state=ComplaintState.INVESTIGATING,
        occurred_at=NOW,
        owner_id="sup-3",
        change="overdue",
        escalated=True,
        deadline_at=NOW,
    )
    assert notices.complaint_progress(overdue, ticket) == []
    assert [n.recipient_id for n in notices.complaint_overdue(overdue, ticket)] == ["staff:sup-3", "grid:g-1"]
    moved = ComplaintUpdated(
        complaint_id="K-1",
        ticket_id="T-1",
        state=ComplaintState.INVESTIGATING,
        occurred_at=NOW,
        change="transition",
        previous_state=ComplaintState.RECEIVED,
    )
    [progress] = notices.complaint_progress(moved, ticket)
    assert (progress.recipient_id, progress.template) == ("customer:C-9", "complaint_investigating")
    assert notices.complaint_progress(moved, None) == []  # whose ticket it is is not known (yet)
