"""Notify in-process for on-call, visits and silent technicians: Alertmanager's webhook becomes one message
per group notification to the on-call rotation (never held by quiet hours, a re-sent notification is the
same message), fieldwork's appointment events reach the ticket's customer with the window in their time
zone, and a silent technician's held work orders reach the grid supervisor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aftersales.notify.app import Settings, build
from aftersales.notify.domain import ChannelName
from aftersales.notify.service import Notifications
from aftersales.notify.testing import RecordingChannel
from aftersales.shared.contracts.desk import TechnicianSilent
from aftersales.shared.contracts.fieldwork import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentRescheduled,
)
from aftersales.shared.testing import FAST, ServiceUnderTest, contract_event, in_process, ticket_created

TOKEN = "test-alertmanager-token-0123456789"
HOOK = {"Authorization": f"Bearer {TOKEN}"}
FIELDWORK, ROUTING = "/aftersales/fieldwork", "/aftersales/routing"
NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
SENT = "aftersales.notification.sent.v1"
WEB = "dev-web-token"


def customer(**extra: Any) -> dict[str, Any]:
    return {
        "channels": ["email"],
        "email": "li@example.com",
        "language": "en",
        "do_not_disturb": None,
        **extra,
    }


@pytest.fixture
async def notify() -> AsyncIterator[tuple[ServiceUnderTest, RecordingChannel]]:
    settings = Settings(**FAST, alertmanager_webhook_token=TOKEN, delivery_backoff_s=1)
    async with in_process(build, settings) as svc:
        channel = RecordingChannel()
        service: Notifications = svc.app.state.notifications
        service.channels[ChannelName.EMAIL] = channel
        yield svc, channel


def alert_group(status: str = "firing", **labels: str) -> dict[str, Any]:
    """Alertmanager's webhook payload (version 4) of one DLQ alert."""
    alert_labels = {
        "alertname": "AftersalesDeadLetterNotEmpty",
        "severity": "warning",
        "topic": "t",
        **labels,
    }
    return {
        "version": "4",
        "groupKey": '{}/{severity="warning"}:{alertname="AftersalesDeadLetterNotEmpty"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "aftersales-warning",
        "groupLabels": {"alertname": "AftersalesDeadLetterNotEmpty"},
        "commonLabels": alert_labels,
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9094",
        "alerts": [
            {
                "status": status,
                "labels": alert_labels,
                "annotations": {"summary": "messages parked in the dead-letter topic of t"},
                "startsAt": "2026-11-30T07:59:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus/graph",
                "fingerprint": "a1b2c3d4e5f60708",
            }
        ],
    }


async def test_an_alert_group_reaches_on_call_once_day_or_night(
    notify: tuple[ServiceUnderTest, RecordingChannel],
) -> None:
    svc, channel = notify
    body = {"channels": ["email"], "email": "oncall@example.com", "language": "en"}
    r = await svc.http.put("/v1/recipients/oncall/platform", json=body, headers=svc.auth())
    assert r.status_code == 201, r.text
    first = await svc.http.post("/v1/alerts/alertmanager", json=alert_group(), headers=HOOK)
    assert first.status_code == 200, first.text
    assert first.json()["recipient_id"] == "oncall:platform" and first.json()["planned"] == 1
    again = await svc.http.post("/v1/alerts/alertmanager", json=alert_group(), headers=HOOK)
    assert again.json() == {**first.json(), "planned": 0}  # Alertmanager's retry: the same message
    resolved = await svc.http.post("/v1/alerts/alertmanager", json=alert_group("resolved"), headers=HOOK)
    assert resolved.json()["planned"] == 1 and resolved.json()["key"] != first.json()["key"]
    await svc.fire_timers()
    sent = await svc.published_exactly(SENT, 2)
    assert {e.data["template"] for e in sent} == {"alert_firing", "alert_resolved"}
    assert all(e.data["deferred"] is False for e in sent)
    subjects = sorted(m.rendered.subject for _, m in channel.sent)
    assert subjects == [
        "[FIRING:1] AftersalesDeadLetterNotEmpty (warning)",
        "[RESOLVED:1] AftersalesDeadLetterNotEmpty (warning)",
    ]
    assert "messages parked in the dead-letter topic of t" in channel.sent[0][1].rendered.body


async def test_the_rotation_label_picks_the_on_call_recipient(
    notify: tuple[ServiceUnderTest, RecordingChannel],
) -> None:
    svc, _ = notify
    r = await svc.http.post("/v1/alerts/alertmanager", json=alert_group(rotation="data-team"), headers=HOOK)
    assert r.json()["recipient_id"] == "oncall:data-team" and r.json()["planned"] == 0  # nobody configured


async def test_the_webhook_wants_its_token_and_a_version_4_payload(
    notify: tuple[ServiceUnderTest, RecordingChannel],
) -> None:
    svc, _ = notify
    r = await svc.http.post("/v1/alerts/alertmanager", json=alert_group())
    assert r.status_code == 401
    r = await svc.http.post("/v1/alerts/alertmanager", json=alert_group(), headers=svc.auth())
    assert r.status_code == 401  # an API token is not Alertmanager's
    bad = {**alert_group(), "version": "3"}
    r = await svc.http.post("/v1/alerts/alertmanager", json=bad, headers=HOOK)
    assert r.status_code == 422 and "version" in r.text
    no_key = {k: v for k, v in alert_group().items() if k != "groupKey"}
    r = await svc.http.post("/v1/alerts/alertmanager", json=no_key, headers=HOOK)
    assert r.status_code == 422 and "groupKey" in r.text
    no_alerts = {**alert_group(), "alerts": []}
    r = await svc.http.post("/v1/alerts/alertmanager", json=no_alerts, headers=HOOK)
    assert r.status_code == 422 and "alerts" in r.text


async def test_appointments_reach_the_customer_in_their_time_zone(
    notify: tuple[ServiceUnderTest, RecordingChannel],
) -> None:
    svc, channel = notify
    body = customer(timezone="Asia/Shanghai")
    await svc.http.put("/v1/recipients/customers/C-9", json=body, headers=svc.auth(WEB))
    await svc.deliver(ticket_created("T-9", customer_id="C-9"))
    common = {"appointment_id": "A-1", "ticket_id": "T-9", "technician_id": "tech-42", "occurred_at": NOW}
    window = {"window_start": NOW + timedelta(days=1), "window_end": NOW + timedelta(days=1, hours=2)}
    booked = AppointmentBooked(**common, **window, booked_by="channel")
    moved = AppointmentRescheduled(
        **common,
        window_start=NOW + timedelta(days=2),
        window_end=NOW + timedelta(days=2, hours=2),
        previous_window_start=window["window_start"],
        reschedules=1,
    )
    cancelled = AppointmentCancelled(**common, reason="requested")
    for data in (booked, moved, cancelled):
        await svc.deliver(contract_event(data, source=FIELDWORK), copies=2)
    await svc.fire_timers()
    await svc.published_exactly(SENT, 4)
    texts = {m.template: m.rendered.body for _, m in channel.sent}
    assert "2026-12-01 16:00-18:00 (Asia/Shanghai)" in texts["appointment_confirmed"]  # 08:00Z is 16:00 there
    assert "2026-12-02 16:00-18:00 (Asia/Shanghai)" in texts["appointment_rescheduled"]
    assert "T-9" in texts["appointment_cancelled"]


async def test_a_silent_technician_is_flagged_to_the_grid_supervisor(
    notify: tuple[ServiceUnderTest, RecordingChannel],
) -> None:
    svc, channel = notify
    body = {"channels": ["email"], "email": "grid7@example.com", "language": "en"}
    await svc.http.put("/v1/recipients/grids/grid-7", json=body, headers=svc.auth())
    silent = TechnicianSilent(
        technician_id="tech-42",
        grid_id="grid-7",
        occurred_at=NOW,
        last_heartbeat_at=NOW - timedelta(minutes=10),
        silent_after_s=300,
        held_ticket_ids=["T-1", "T-2"],
    )
    await svc.deliver(contract_event(silent, source=ROUTING), copies=2)
    await svc.fire_timers()
    [sent] = await svc.published_exactly(SENT)
    assert sent.data["recipient_id"] == "grid:grid-7" and sent.data["template"] == "technician_silent"
    [(to, message)] = channel.sent
    assert to == "grid7@example.com" and "T-1, T-2" in message.rendered.body
    assert "2 work order(s)" in message.rendered.body
