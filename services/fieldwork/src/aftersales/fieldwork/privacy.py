"""Personal-data rights in fieldwork (PIPL). Fieldwork keeps where a technician met the customer
(check-in and check-out points: the customer's address), the notes on the work done, the customer's
signature on service reports (image or pen strokes, with the signer's name) and the photos uploaded to
reports (they may show the customer's home). An erasure removes them from every appointment and report
of the customer's tickets (the ticket ids come in the erasure request); retention (`retention.py`)
removes them record by record with the same functions.

Appointments and reports are found by their ticket through the `ticket_id` indexes, the same per-ticket
lists fieldwork already reads when a ticket closes (a handful of documents per ticket).
"""

from __future__ import annotations

from datetime import datetime

from aftersales.fieldwork.store import AppointmentStore, PhotoStore, ReportStore
from aftersales.shared.contracts.privacy import ErasureRequested
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.errors import RetryLater
from aftersales.shared.privacy import ErasureLedger

ERASE_TRIES = 5


class PersonalData:
    """Erasure of the customer's address points, work notes, signatures and report photos."""

    def __init__(
        self,
        *,
        appointments: AppointmentStore,
        reports: ReportStore,
        photos: PhotoStore,
        ledger: ErasureLedger,
    ) -> None:
        self.appointments = appointments
        self.reports = reports
        self.photos = photos
        self.ledger = ledger

    async def on_erasure_requested(self, request: ErasureRequested, _: CloudEvent) -> None:
        async def erase() -> dict[str, int]:
            counts = {"appointments": 0, "signatures": 0, "report_photos": 0}
            for ticket_id in request.ticket_ids:
                counts["appointments"] += await self.appointments.erase_personal(ticket_id)
                counts["signatures"] += await self.reports.erase_signatures(ticket_id)
                for report_id in await self.reports.with_photos(ticket_id):
                    counts["report_photos"] += await self.erase_photos(report_id)
            return counts

        await self.ledger.apply(request, erase)

    async def erase_photos(self, report_id: str, *, active_until: datetime | None = None) -> bool:
        """Delete the bytes of a report's uploaded photos, then record it on the report (a signed report
        keeps their SHA-256, a draft drops them); True when it had any. Bytes first: a crash in between
        leaves the report still listing them, so a retry deletes (nothing more) and records it. With
        `active_until` (retention), only a report unchanged since then.

        A photo's id is its content's hash: the same bytes on another report (a correction copies its
        original's photos) are the same chunks, and go with them."""
        for _ in range(ERASE_TRIES):
            held = await self.reports.photos_held(report_id)
            if held is None:
                return False
            if active_until is not None and held.last_change > active_until:
                return False
            for photo in held.files:
                await self.photos.delete(photo)
            if await self.reports.photos_erased(held):
                return True
        raise RetryLater(f"report {report_id} kept changing while its photos were erased")
