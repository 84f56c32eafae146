"""The status events carry ids, never addresses; the settings refuse an incomplete SMS provider and turn
on only the channels they configure."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from aftersales.notify import messages
from aftersales.notify.app import Settings
from aftersales.notify.domain import ChannelName, Delivery, DeliveryStatus, Language
from aftersales.shared.testing import FAST

NOW = datetime(2026, 11, 30, 4, 0, tzinfo=UTC)


def delivery(status: DeliveryStatus, **kw: object) -> Delivery:
    fields: dict[str, object] = {
        "id": "E-1|customer:C-1|sms",
        "cause_event_id": "E-1",
        "cause_event_type": "aftersales.ticket.created.v1",
        "ticket_id": "T-1",
        "recipient_id": "customer:C-1",
        "channel": ChannelName.SMS,
        "template": "ticket_acknowledged",
        "params": {"ticket_id": "T-1"},
        "status": status,
        "due_at": NOW,
        "attempts": 1,
        "language": Language.EN,
        **kw,
    }
    return Delivery(**fields)  # type: ignore[arg-type]


def test_status_events_follow_the_delivery_and_carry_no_address() -> None:
    assert messages.for_status(delivery(DeliveryStatus.PENDING), NOW) == []
    [sent] = messages.for_status(delivery(DeliveryStatus.SENT), NOW)
    assert sent.model_dump()["recipient_id"] == "customer:C-1"
    failed = delivery(DeliveryStatus.FAILED, failure="retries_exhausted", last_error="aliyun:Throttling")
    [event] = messages.for_status(failed, NOW)
    body = event.model_dump(mode="json")
    assert (body["reason"], body["error"], body["attempts"]) == ("retries_exhausted", "aliyun:Throttling", 1)
    assert "+86" not in json.dumps(body) and "@" not in json.dumps(body)


def test_an_aliyun_provider_needs_its_credentials() -> None:
    with pytest.raises(ValidationError) as bad:
        Settings(**FAST, sms_provider="aliyun", aliyun_access_key_id="id")
    assert "ALIYUN_ACCESS_KEY_SECRET" in str(bad.value) and "ALIYUN_SMS_SIGN_NAME" in str(bad.value)


def test_only_configured_channels_are_on() -> None:
    assert set(Settings(**FAST).channels()) == {ChannelName.DINGTALK, ChannelName.WECOM, ChannelName.FEISHU}
    full = Settings(
        **FAST,
        smtp_host="127.0.0.1",
        sms_provider="aliyun",
        aliyun_access_key_id="id",
        aliyun_access_key_secret="secret",
        aliyun_sms_sign_name="售后",
    )
    assert set(full.channels()) == set(ChannelName)
    policy = Settings(**FAST, delivery_max_attempts=3, delivery_backoff_s=2).policy()
    assert policy.retry.max_attempts == 3 and policy.retry.backoff(2).total_seconds() == 4
