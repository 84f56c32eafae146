"""PIPL data export in follow-up: the customer's visits (callbacks, on-site checks, care visits) with
their history and the agents' notes, sealed to the export's public key (`shared/export.py`). The visits
are found by `_id`, as for an erasure: derived from the ticket ids of the request chunk and from the
customer's care counter, never by a query."""

from __future__ import annotations

from typing import Any

from aftersales.followup.store import TicketFactsStore, VisitNotes, VisitStore
from aftersales.shared.contracts.privacy import ExportRequested
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.errors import NotFound
from aftersales.shared.export import ExportLedger, Records


class FollowUpExport:
    """Follow-up's answer to an export request: the customer's visits."""

    def __init__(
        self, *, visits: VisitStore, notes: VisitNotes, tickets: TicketFactsStore, ledger: ExportLedger
    ) -> None:
        self.visits = visits
        self.notes = notes
        self.tickets = tickets
        self.ledger = ledger

    async def on_export_requested(self, request: ExportRequested, _: CloudEvent) -> None:
        await self.ledger.answer(request, lambda: self._records(request))

    async def _records(self, request: ExportRequested) -> Records:
        # The customer's care visits go with the first chunk; each chunk brings its tickets' visits.
        customer = request.customer_id if request.chunk == 0 else ""
        found: list[dict[str, Any]] = []
        for visit_id in await self.notes.customer_visit_ids(customer, request.ticket_ids, self.tickets):
            try:
                found.append(await self.visits.get(visit_id))
            except NotFound:
                continue
        return {"visits": found}
