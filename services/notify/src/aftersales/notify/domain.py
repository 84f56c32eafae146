"""Notify's rules: who a message goes to, on which channels, when (do-not-disturb hours, retries with
backoff), and what an attempt's outcome makes of a delivery. Pure functions over plain data, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from enum import StrEnum

from aftersales.shared.calendar import DoNotDisturb, zone


class RecipientKind(StrEnum):
    CUSTOMER = "customer"  # a customer of the tickets; contact points registered by a channel
    STAFF = "staff"  # a person by platform id: technician, supervisor, complaint owner
    GRID = "grid"  # the supervisor(s) on duty for a service grid
    ONCALL = "oncall"  # the on-call rotation of the platform


class ChannelName(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    DINGTALK = "dingtalk"
    WECOM = "wecom"
    FEISHU = "feishu"


ROBOTS = frozenset({ChannelName.DINGTALK, ChannelName.WECOM, ChannelName.FEISHU})
CUSTOMER_CHANNELS = frozenset({ChannelName.EMAIL, ChannelName.SMS})


class Language(StrEnum):
    ZH = "zh"
    EN = "en"


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # an attempt is due (now, after do-not-disturb hours, or after a backoff)
    SENT = "sent"
    FAILED = "failed"


def recipient_id(kind: RecipientKind, key: str) -> str:
    return f"{kind.value}:{key}"


@dataclass(frozen=True, slots=True)
class Robot:
    """A group robot's webhook and, when the group has signing on, its secret."""

    url: str
    secret: str | None = None


@dataclass(frozen=True, slots=True)
class Recipient:
    """Whom notify can reach and how: the minimal contact points and preferences it keeps."""

    id: str
    kind: RecipientKind
    channels: tuple[ChannelName, ...]
    language: Language = Language.ZH
    email: str | None = None
    phone: str | None = None
    robots: Mapping[ChannelName, Robot] = field(default_factory=dict)
    timezone: str = "Asia/Shanghai"
    do_not_disturb: DoNotDisturb | None = None  # customers only; never applied to staff or on-call
    registered_by: str | None = None

    def has_address(self, channel: ChannelName) -> bool:
        if channel == ChannelName.EMAIL:
            return self.email is not None
        if channel == ChannelName.SMS:
            return self.phone is not None
        return channel in self.robots


@dataclass(frozen=True, slots=True)
class Notice:
    """One message an event calls for: a template and its parameters, for one recipient."""

    template: str
    recipient_id: str
    params: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message to one recipient on one channel, for one event: `_id` is that triple, so a
    redelivered event finds it and sends nothing twice."""

    id: str
    cause_event_id: str
    cause_event_type: str
    ticket_id: str | None
    recipient_id: str
    channel: ChannelName
    template: str
    params: Mapping[str, str]
    status: DeliveryStatus
    due_at: datetime
    attempts: int = 0
    deferred: bool = False
    language: Language | None = None
    last_error: str | None = None
    failure: str | None = None

    @property
    def timer_id(self) -> str:
        """The durable timer of the next attempt (one per attempt number: a retry is a new timer)."""
        return f"{self.id}:attempt:{self.attempts + 1}"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    first_backoff: timedelta = timedelta(seconds=30)
    max_backoff: timedelta = timedelta(hours=1)

    def backoff(self, attempts: int) -> timedelta:
        """Return the wait after `attempts` failed attempts: doubling from `first_backoff`, capped."""
        doublings = min(max(attempts - 1, 0), 20)  # 2**20 backoffs: past any sane cap
        grown: timedelta = self.first_backoff * (2**doublings)
        return min(grown, self.max_backoff)


class Outcome(StrEnum):
    SENT = "sent"
    TRANSIENT = "transient"  # worth another try later (connection refused, 5xx, timeouts)
    REFUSED = "refused"  # the channel said no for good (bad address, rejected content, bad signature)


def delivery_id(cause_event_id: str, recipient: str, channel: ChannelName) -> str:
    return f"{cause_event_id}|{recipient}|{channel.value}"


def channels_for(recipient: Recipient) -> tuple[ChannelName, ...]:
    """Return the recipient's preferred channels it has an address for, in its order."""
    return tuple(c for c in recipient.channels if recipient.has_address(c))


def first_attempt_at(recipient: Recipient, now: datetime) -> tuple[datetime, bool]:
    """Return when the first attempt may go out and whether do-not-disturb hours held it back.

    Do-not-disturb hours are the customer's: staff and on-call are reached at once, day or night."""
    if recipient.kind != RecipientKind.CUSTOMER or recipient.do_not_disturb is None:
        return now, False
    allowed = recipient.do_not_disturb.next_allowed(now, zone(recipient.timezone))
    return allowed, allowed > now


def plan_deliveries(
    notice: Notice,
    recipient: Recipient,
    *,
    cause_event_id: str,
    cause_event_type: str,
    ticket_id: str | None,
    now: datetime,
) -> list[Delivery]:
    """Return the deliveries of a notice: one per preferred channel the recipient can be reached on."""
    due_at, deferred = first_attempt_at(recipient, now)
    return [
        Delivery(
            id=delivery_id(cause_event_id, recipient.id, channel),
            cause_event_id=cause_event_id,
            cause_event_type=cause_event_type,
            ticket_id=ticket_id,
            recipient_id=recipient.id,
            channel=channel,
            template=notice.template,
            params=dict(notice.params),
            status=DeliveryStatus.PENDING,
            due_at=due_at,
            deferred=deferred,
        )
        for channel in channels_for(recipient)
    ]


def after_attempt(
    policy: RetryPolicy,
    delivery: Delivery,
    outcome: Outcome,
    error: str | None,
    language: Language,
    now: datetime,
) -> Delivery:
    """Return the delivery after one attempt: sent; pending again after a backoff; or failed (refused,
    or the last allowed attempt failed too)."""
    attempts = delivery.attempts + 1
    done = replace(delivery, attempts=attempts, language=language, last_error=error)
    if outcome == Outcome.SENT:
        return replace(done, status=DeliveryStatus.SENT, last_error=None)
    if outcome == Outcome.REFUSED:
        return replace(done, status=DeliveryStatus.FAILED, failure="refused")
    if attempts >= policy.max_attempts:
        return replace(done, status=DeliveryStatus.FAILED, failure="retries_exhausted")
    return replace(done, due_at=now + policy.backoff(attempts))


def without_address(delivery: Delivery, language: Language) -> Delivery:
    """Return the delivery failed because its recipient no longer has an address on its channel."""
    return replace(
        delivery, status=DeliveryStatus.FAILED, failure="no_address", language=language, last_error=None
    )


def do_not_disturb(start: time | None, end: time | None) -> DoNotDisturb | None:
    """Return the window from two local times; None (no window) when either is missing or both equal."""
    if start is None or end is None or start == end:
        return None
    return DoNotDisturb(start, end)
