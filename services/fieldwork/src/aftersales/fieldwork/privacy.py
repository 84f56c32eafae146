"""Personal-data rights in fieldwork (PIPL). Fieldwork keeps where a technician met the customer
(check-in and check-out points: the customer's address), the notes on the work done, and the customer's
signature on service reports (image or pen strokes, with the signer's name). An erasure removes them from
every appointment and report of the customer's tickets (the ticket ids come in the erasure request).

Appointments and reports are found by their ticket through the `ticket_id` indexes, the same per-ticket
lists fieldwork already reads when a ticket closes (a handful of documents per ticket).
"""

from __future__ import annotations

from aftersales.fieldwork.store import AppointmentStore, ReportStore
from aftersales.shared.contracts.privacy import ErasureRequested
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.privacy import ErasureLedger


class PersonalData:
    """Erasure of the customer's address points, work notes and signatures."""

    def __init__(
        self, *, appointments: AppointmentStore, reports: ReportStore, ledger: ErasureLedger
    ) -> None:
        self.appointments = appointments
        self.reports = reports
        self.ledger = ledger

    async def on_erasure_requested(self, request: ErasureRequested, _: CloudEvent) -> None:
        async def erase() -> dict[str, int]:
            counts = {"appointments": 0, "signatures": 0}
            for ticket_id in request.ticket_ids:
                counts["appointments"] += await self.appointments.erase_personal(ticket_id)
                counts["signatures"] += await self.reports.erase_signatures(ticket_id)
            return counts

        await self.ledger.apply(request, erase)
