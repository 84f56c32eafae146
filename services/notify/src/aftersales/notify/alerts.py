"""On-call messages from Alertmanager: its webhook (payload version 4) becomes one message per alert group
notification to the on-call rotation (`oncall:<rotation>`), firing or resolved, never held by quiet hours.

Alertmanager re-sends a group's notification (its retries, `repeat_interval`, a peer's copy): the message's
key is the group, its status and each alert's fingerprint and start, so the same notification is one
message, while a new alert in the group, a resolution or a new firing of the same alert is a new one.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from aftersales.notify.domain import Notice, RecipientKind, recipient_id
from aftersales.notify.service import Notifications

CAUSE_TYPE = "alertmanager.webhook.v4"
ROTATION_LABEL = "rotation"
ROTATION = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
MAX_LISTED = 10  # alerts named in one message; the others are counted
MAX_TEXT = 2000

Labels = dict[str, str]


class Alert(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    status: Literal["firing", "resolved"]
    labels: Labels
    annotations: Labels = Field(default_factory=dict)
    starts_at: AwareDatetime = Field(alias="startsAt")
    ends_at: str | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL", max_length=2000)
    fingerprint: str = Field(min_length=1, max_length=64)


class AlertmanagerWebhook(BaseModel):
    """Alertmanager's webhook payload (`version` 4), the fields notify reads."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    version: Literal["4"]
    group_key: str = Field(alias="groupKey", min_length=1, max_length=4000)
    truncated_alerts: int = Field(default=0, ge=0, alias="truncatedAlerts")
    status: Literal["firing", "resolved"]
    receiver: str = Field(max_length=200)
    group_labels: Labels = Field(default_factory=dict, alias="groupLabels")
    common_labels: Labels = Field(default_factory=dict, alias="commonLabels")
    common_annotations: Labels = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL", max_length=2000)
    alerts: list[Alert] = Field(min_length=1, max_length=1000)


def notification_key(hook: AlertmanagerWebhook) -> str:
    """The notification's identity: group, status, and each alert's fingerprint and start (sorted)."""
    alerts = sorted(f"{a.fingerprint}@{a.starts_at.astimezone(UTC).isoformat()}" for a in hook.alerts)
    text = "\n".join([hook.group_key, hook.status, *alerts])
    return f"alertmanager:{hashlib.sha256(text.encode()).hexdigest()[:40]}"


def rotation_of(hook: AlertmanagerWebhook, default: str) -> str:
    """The on-call rotation: the `rotation` label the group's alerts share, else the default."""
    named = hook.common_labels.get(ROTATION_LABEL) or hook.group_labels.get(ROTATION_LABEL)
    return named if named and ROTATION.match(named) else default


def _line(alert: Alert) -> str:
    name = alert.labels.get("alertname", "alert")
    what = alert.annotations.get("summary") or ", ".join(
        f"{k}={v}" for k, v in sorted(alert.labels.items()) if k not in ("alertname", "severity")
    )
    since = alert.starts_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"- {name}: {what} (since {since})"


def oncall_notice(hook: AlertmanagerWebhook, default_rotation: str) -> Notice:
    """Return the one message an alert group notification makes for the on-call rotation."""
    rotation = rotation_of(hook, default_rotation)
    listed = [_line(a) for a in hook.alerts[:MAX_LISTED]]
    more = len(hook.alerts) - len(listed) + hook.truncated_alerts
    if more > 0:
        listed.append(f"... and {more} more")
    params = {
        "alertname": hook.common_labels.get("alertname") or hook.group_labels.get("alertname") or "alerts",
        "severity": hook.common_labels.get("severity", "-"),
        "count": str(len(hook.alerts) + hook.truncated_alerts),
        "rotation": rotation,
        "alerts": "\n".join(listed)[:MAX_TEXT],
        "external_url": hook.external_url or "-",
    }
    template = "alert_firing" if hook.status == "firing" else "alert_resolved"
    return Notice(template, recipient_id(RecipientKind.ONCALL, rotation), params)


class OnCall:
    """Alertmanager's notifications become messages to the on-call rotation."""

    def __init__(self, notifications: Notifications, default_rotation: str) -> None:
        self.notifications = notifications
        self.default_rotation = default_rotation

    async def receive(self, hook: AlertmanagerWebhook) -> tuple[str, str, int]:
        """Plan the message of one group notification; return its key, recipient and how many
        deliveries were new (0 for a notification seen before, or a rotation nobody configured)."""
        notice = oncall_notice(hook, self.default_rotation)
        key = notification_key(hook)
        cause = {"cause_event_id": key, "cause_event_type": CAUSE_TYPE, "ticket_id": None}
        return key, notice.recipient_id, await self.notifications.plan(notice, cause, round_=0)
