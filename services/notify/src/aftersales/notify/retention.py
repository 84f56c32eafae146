"""Retention (PIPL) in notify: a customer's contact points (its recipient document `customer:<id>`:
phone, e-mail, channels, quiet hours) are forgotten when they have not been registered again for
`RETENTION_RECIPIENT_CONTACT_DAYS`, by the erasure's own code (`PersonalData.erase_contact`); a later
message to the customer waits for contact points as for any customer not registered yet. Deliveries
stay: they carry ids, template keys and links only (no address, no rendered text), so KPIs keep
counting. Staff, grid and on-call recipients are configured by administrators and are not scheduled.
Scheduling is the shared one (`aftersales.shared.retention`).

Inbound mails (`inbound_mail`, `_id` = mail id: the attachments' content and names, a command not yet
published) are erased `RETENTION_INBOUND_MAIL_DAYS` after they were received, by the erasure's own code
(`PersonalData.erase_mail`); the record stays as a tombstone of ids, types and sizes. A mail is armed
once, as it is recorded (the hook `InboundMailStore.noted`; a mail never changes afterwards).

Contact points are armed with one `arm` call when a channel or a supervisor registers them
(`PUT /v1/recipients/customers/{id}`; the hook `RecipientStore.noted`, after the write), an HTTP request
that is not a hot path (the message paths only read recipients); registering them again moves their
activity on, and the firing arms them again.
"""

from __future__ import annotations

from datetime import datetime

from aftersales.notify.privacy import PersonalData
from aftersales.shared.retention import Retention
from aftersales.shared.runtime import ServiceRuntime

RECIPIENT_CONTACT = "recipient_contact"  # `_id` = customer id
INBOUND_MAIL = "inbound_mail"  # `_id` = mail id


class NotifyRetention:
    """Notify's kinds of personal data, customers' contact points and their inbound mails, with their
    periods."""

    def __init__(
        self, runtime: ServiceRuntime, personal_data: PersonalData, *, contact_days: float, mail_days: float
    ) -> None:
        self.schedule = Retention(runtime, service="notify")
        self.schedule.kind(
            RECIPIENT_CONTACT,
            days=contact_days,
            activity=personal_data.contact_activity,
            pseudonymise=lambda customer_id, until: personal_data.erase_contact(
                customer_id, active_until=until
            ),
        )
        self.schedule.kind(
            INBOUND_MAIL,
            days=mail_days,
            activity=personal_data.mail_received,
            pseudonymise=personal_data.erase_mail,
        )

    async def noted(self, customer_id: str, at: datetime) -> None:
        """The customer's contact points were registered at `at`: arm their removal."""
        await self.schedule.arm(RECIPIENT_CONTACT, customer_id, at)

    async def mail_noted(self, mail_id: str, at: datetime) -> None:
        """A mail received at `at` is being recorded: arm the erasure of its content."""
        await self.schedule.arm(INBOUND_MAIL, mail_id, at)
