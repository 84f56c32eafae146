"""Retention (PIPL) at intake: a customer's contact data (name, phone, e-mail, address) is pseudonymised
when the customer has had no ticket and no edit for `RETENTION_CUSTOMER_CONTACT_DAYS`, and what a
customer wrote on a ticket (title, description) when the ticket has not changed for
`RETENTION_TICKET_TEXT_DAYS`. The erasure's own code does it (`PrivacyStore`); ids, states, categories
and times stay, so KPIs keep counting. Scheduling is the shared one (`aftersales.shared.retention`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from aftersales.intake.customer_records import CustomerRecords
from aftersales.intake.privacy_store import PrivacyStore
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.kafka import Delivery
from aftersales.shared.retention import Retention
from aftersales.shared.runtime import ServiceRuntime

ARMING_TYPES = frozenset({"aftersales.ticket.created.v1", "aftersales.ticket.reopened.v1"})
CUSTOMER_CONTACT = "customer_contact"  # `_id` = customer id
TICKET_TEXT = "ticket_text"  # `_id` = ticket id


class RetentionSettings(Protocol):
    retention_customer_contact_days: float
    retention_ticket_text_days: float


class IntakeRetention:
    """Intake's kinds of personal data with their periods. A ticket arms itself and its customer from
    intake's own ticket stream, in batches (`on_ticket_events`, consumer group `-ownstream`), so the
    request path pays nothing; customer records call `noted` when a record is created by hand."""

    def __init__(
        self,
        runtime: ServiceRuntime,
        store: PrivacyStore,
        records: CustomerRecords,
        settings: RetentionSettings,
    ) -> None:
        self.store = store
        self.schedule = Retention(runtime, service="intake")
        self.schedule.kind(
            CUSTOMER_CONTACT,
            days=settings.retention_customer_contact_days,
            activity=store.customer_activity,
            pseudonymise=self._erase_customer,
        )
        self.schedule.kind(
            TICKET_TEXT,
            days=settings.retention_ticket_text_days,
            activity=store.ticket_activity,
            pseudonymise=self._erase_ticket,
        )
        records.noted = self.noted

    async def on_ticket_event(self, event: CloudEvent) -> None:
        await self.arm_tickets([event])

    async def on_ticket_events(self, deliveries: Sequence[Delivery]) -> None:
        await self.arm_tickets([d.event for d in deliveries])

    async def arm_tickets(self, events: Sequence[CloudEvent]) -> None:
        """Arm each new (or reopened) ticket's text and its customer's contact data from the event's time."""
        customers: list[tuple[str, datetime]] = []
        tickets: list[tuple[str, datetime]] = []
        for event in events:
            if event.type not in ARMING_TYPES:
                continue
            at = event.time
            tickets.append((event.ticket_id(), at))
            customer_id = event.data.get("customer_id")
            if isinstance(customer_id, str) and customer_id:
                customers.append((customer_id, at))
        await self.schedule.arm_many(CUSTOMER_CONTACT, customers)
        await self.schedule.arm_many(TICKET_TEXT, tickets)

    async def noted(self, customer_id: str, ticket_id: str | None, at: datetime) -> None:
        """A ticket names its customer, or a customer record is created: arm them from `at`."""
        await self.schedule.arm(CUSTOMER_CONTACT, customer_id, at)
        if ticket_id:
            await self.schedule.arm(TICKET_TEXT, ticket_id, at)

    async def _erase_customer(self, customer_id: str, active_until: datetime) -> bool:
        return await self.store.erase_customer(customer_id, datetime.now(UTC), active_until=active_until) == 1

    async def _erase_ticket(self, ticket_id: str, active_until: datetime) -> bool:
        return await self.store.erase_ticket_text(ticket_id, active_until=active_until) == 1
