"""The delivery status events notify publishes: ids, channel and template, never an address."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from aftersales.notify.domain import Delivery, DeliveryStatus, Language
from aftersales.shared.contracts.notifications import NotificationFailed, NotificationSent


def _common(delivery: Delivery, now: datetime) -> dict[str, Any]:
    return {
        "delivery_id": delivery.id,
        "cause_event_id": delivery.cause_event_id,
        "cause_event_type": delivery.cause_event_type,
        "ticket_id": delivery.ticket_id,
        "recipient_id": delivery.recipient_id,
        "channel": delivery.channel.value,
        "template": delivery.template,
        "language": (delivery.language or Language.ZH).value,
        "attempts": delivery.attempts,
        "occurred_at": now,
    }


def for_status(delivery: Delivery, now: datetime) -> list[BaseModel]:
    """Return the status event of a delivery that just finished (none while it is still pending)."""
    if delivery.status == DeliveryStatus.SENT:
        return [NotificationSent(**_common(delivery, now), deferred=delivery.deferred)]
    if delivery.status == DeliveryStatus.FAILED:
        return [
            NotificationFailed(
                **_common(delivery, now),
                reason=delivery.failure or "refused",
                error=delivery.last_error or delivery.failure or "unknown",
            )
        ]
    return []
