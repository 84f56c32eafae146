"""Retention (PIPL) in notify: a customer's contact points (its recipient document `customer:<id>`:
phone, e-mail, channels, quiet hours) are forgotten when they have not been registered again for
`RETENTION_RECIPIENT_CONTACT_DAYS`, by the erasure's own code (`PersonalData.erase_contact`); a later
message to the customer waits for contact points as for any customer not registered yet. Deliveries
stay: they carry ids, template keys and links only (no address, no rendered text), so KPIs keep
counting. Staff, grid and on-call recipients are configured by administrators and are not scheduled.
Scheduling is the shared one (`aftersales.shared.retention`).

Armed with one `arm` call when a channel or a supervisor registers a customer's contact points
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


class NotifyRetention:
    """Notify's one kind of personal data, customers' contact points, with its period."""

    def __init__(self, runtime: ServiceRuntime, personal_data: PersonalData, *, contact_days: float) -> None:
        self.schedule = Retention(runtime, service="notify")
        self.schedule.kind(
            RECIPIENT_CONTACT,
            days=contact_days,
            activity=personal_data.contact_activity,
            pseudonymise=lambda customer_id, until: personal_data.erase_contact(
                customer_id, active_until=until
            ),
        )

    async def noted(self, customer_id: str, at: datetime) -> None:
        """The customer's contact points were registered at `at`: arm their removal."""
        await self.schedule.arm(RECIPIENT_CONTACT, customer_id, at)
