"""PIPL data export in fieldwork: the appointments of the customer's tickets (windows, where the
technician checked in and out, notes on the work) and their service reports (work, parts, the customer's
signature and the signer's name), sealed to the export's public key (`shared/export.py`). Found by
ticket through the `ticket_id` indexes, as for an erasure (a handful of documents per ticket)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aftersales.fieldwork.store import AppointmentStore, ReportStore
from aftersales.shared.contracts.privacy import ExportRequested
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.export import ExportLedger, Records

PER_TICKET = 100  # appointments or reports of one ticket; a ticket has a handful


class FieldworkExport:
    """Fieldwork's answer to an export request: the customer's appointments and service reports."""

    def __init__(self, *, appointments: AppointmentStore, reports: ReportStore, ledger: ExportLedger) -> None:
        self.appointments = appointments
        self.reports = reports
        self.ledger = ledger

    async def on_export_requested(self, request: ExportRequested, _: CloudEvent) -> None:
        await self.ledger.answer(request, lambda: self._records(request))

    async def _records(self, request: ExportRequested) -> Records:
        appointments: list[dict[str, Any]] = []
        reports: list[dict[str, Any]] = []
        for ticket_id in request.ticket_ids:
            appointments += [asdict(a) for a in await self.appointments.of_ticket(ticket_id, PER_TICKET)]
            reports += [asdict(r) for r in await self.reports.of_ticket(ticket_id, PER_TICKET)]
        return {"appointments": appointments, "reports": reports}
