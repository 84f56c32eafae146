"""Messages about work in the field: the customer's visit booked, moved or called off (fieldwork's
appointment events) and a silent technician's held work orders for the grid supervisor (routing's desk)."""

from __future__ import annotations

from aftersales.notify import notices
from aftersales.notify.service import Notifications
from aftersales.shared.contracts.desk import TechnicianSilent
from aftersales.shared.contracts.fieldwork import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentRescheduled,
)
from aftersales.shared.envelope import CloudEvent


class FieldNotices:
    def __init__(self, notifications: Notifications) -> None:
        self.notifications = notifications

    async def on_appointment(
        self, event: AppointmentBooked | AppointmentRescheduled | AppointmentCancelled, envelope: CloudEvent
    ) -> None:
        """The ticket's customer (known from `ticket.created`/`reopened`) learns of the visit."""
        ticket = await self.notifications.tickets.find(event.ticket_id)
        await self.notifications.notify(notices.appointment(event, ticket), envelope, event.ticket_id)

    async def on_technician_silent(self, silent: TechnicianSilent, envelope: CloudEvent) -> None:
        await self.notifications.notify(notices.technician_silent(silent), envelope, None)
