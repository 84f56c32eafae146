from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aftersales.shared.contracts.events import TicketCancelled
from aftersales.shared.envelope import CloudEvent, PoisonEvent, decode_headers, from_kafka, new_event


def cancelled(ticket_id: str = "T-1") -> CloudEvent:
    return new_event(
        TicketCancelled(ticket_id=ticket_id, reason="dup", cancelled_at=datetime(2026, 1, 2, tzinfo=UTC)),
        source="/aftersales/intake",
        subject=ticket_id,
        traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01",
    )


def test_binary_mode_headers_carry_every_required_attribute() -> None:
    event = cancelled()
    headers = event.headers()
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_type"] == "aftersales.ticket.cancelled.v1"
    assert headers["ce_source"] == "/aftersales/intake"
    assert headers["ce_subject"] == "T-1"
    assert headers["content-type"] == "application/json"
    assert headers["ce_time"].endswith("Z")
    assert headers["traceparent"].startswith("00-")
    assert event.key == b"T-1"
    assert json.loads(event.value())["reason"] == "dup"


@given(ticket_id=st.text(min_size=1, max_size=40), reason=st.text(max_size=200))
def test_round_trip_through_kafka_form_keeps_everything(ticket_id: str, reason: str) -> None:
    event = new_event(
        TicketCancelled(ticket_id=ticket_id, reason=reason, cancelled_at=datetime.now(UTC)),
        source="/s",
        subject=ticket_id,
    )
    raw = [(k, v.encode()) for k, v in event.headers().items()]
    back = from_kafka(decode_headers(raw), event.value())
    assert (back.id, back.type, back.source, back.subject, back.data) == (
        event.id,
        event.type,
        event.source,
        event.subject,
        event.data,
    )
    assert back.model() == TicketCancelled.model_validate(event.data)


@pytest.mark.parametrize(
    ("headers", "value", "reason"),
    [
        ({}, b"{}", "missing header"),
        ({"ce_specversion": "0.3", "ce_id": "1", "ce_source": "s", "ce_type": "t"}, b"{}", "specversion"),
        ({"ce_specversion": "1.0", "ce_id": "1", "ce_source": "s", "ce_type": "t"}, b"{nope", "not JSON"),
        ({"ce_specversion": "1.0", "ce_id": "1", "ce_source": "s", "ce_type": "t"}, b"[1]", "JSON object"),
        (
            {
                "ce_specversion": "1.0",
                "ce_id": "1",
                "ce_source": "s",
                "ce_type": "t",
                "content-type": "text/xml",
            },
            b"{}",
            "content-type",
        ),
        (
            {"ce_specversion": "1.0", "ce_id": "1", "ce_source": "s", "ce_type": "t", "ce_time": "yesterday"},
            b"{}",
            "RFC 3339",
        ),
    ],
)
def test_malformed_messages_are_poison_with_a_reason(
    headers: dict[str, str], value: bytes, reason: str
) -> None:
    with pytest.raises(PoisonEvent, match=reason):
        from_kafka(headers, value)


def test_unknown_type_and_invalid_data_are_poison() -> None:
    event = cancelled()
    with pytest.raises(PoisonEvent, match="unknown event type"):
        CloudEvent(type="aftersales.nope.v1", source="s", subject="x", data={}).model()
    broken = CloudEvent(type=event.type, source="s", subject="x", data={"ticket_id": "x"})
    with pytest.raises(PoisonEvent, match="reason"):
        broken.model()


def test_non_utf8_header_is_poison() -> None:
    with pytest.raises(PoisonEvent, match="UTF-8"):
        decode_headers([("ce_id", b"\xff\xfe")])
