"""Delivery status of the messages notify sends (`aftersales.notifications.v1`).

A recipient is named by its id in notify (`customer:<id>`, `staff:<id>`, `grid:<id>`, `oncall:<id>`),
never by an address: phone numbers, e-mail addresses and webhook URLs stay in notify's database.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from aftersales.shared.contracts.common import EventData
from aftersales.shared.contracts.registry import event
from aftersales.shared.contracts.topics import Topic

NotificationChannel = Literal["email", "sms", "dingtalk", "wecom", "feishu"]


class NotificationEvent(EventData):
    delivery_id: str = Field(description="notify's delivery: `<event id>|<recipient id>|<channel>`")
    cause_event_id: str = Field(description="`ce_id` of the event the message is about")
    cause_event_type: str = Field(description="`ce_type` of that event")
    ticket_id: str | None = None
    recipient_id: str = Field(description="`customer:<id>`, `staff:<id>`, `grid:<id>` or `oncall:<id>`")
    channel: NotificationChannel
    template: str = Field(description="the message template, e.g. ticket_acknowledged")
    language: Literal["zh", "en"]
    attempts: int = Field(ge=0, description="send attempts made (0: none was possible)")
    occurred_at: AwareDatetime


@event("aftersales.notification.sent.v1", Topic.NOTIFICATIONS)
class NotificationSent(NotificationEvent):
    """A message was handed to its channel (SMTP server, SMS provider or group robot)."""

    deferred: bool = Field(default=False, description="held back by the customer's do-not-disturb hours")


@event("aftersales.notification.failed.v1", Topic.NOTIFICATIONS)
class NotificationFailed(NotificationEvent):
    """A message could not be delivered: refused by its channel, or still failing after every retry."""

    reason: Literal["refused", "retries_exhausted", "no_address"]
    error: str = Field(description="the kind of error (an exception class or a provider code), no text")
