"""Notify's durable timer kinds, each with its one handler: a delivery attempt falls due (first send,
after do-not-disturb hours, or a retry after a backoff), and a customer's contact points are looked for
again (the channel registers them just after the ticket, so they may arrive after the event)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aftersales.shared.runtime import ServiceRuntime

if TYPE_CHECKING:
    from aftersales.notify.service import Notifications

# The kinds are stored with each timer: renaming one orphans the timers already armed.
ATTEMPT_DUE = "delivery_attempt"
CONTACT_WAIT = "contact_wait"


def register(runtime: ServiceRuntime, notifications: Notifications) -> None:
    runtime.on_timer(ATTEMPT_DUE, notifications.on_attempt_due)
    runtime.on_timer(CONTACT_WAIT, notifications.on_contact_wait)
