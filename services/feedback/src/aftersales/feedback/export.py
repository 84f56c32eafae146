"""PIPL data export in feedback: the surveys of the customer's tickets (scores and comments) and their
complaints (summary, steps and notes), sealed to the export's public key (`shared/export.py`). The
documents are found by `_id` exactly as an erasure finds them (`PersonalData`)."""

from __future__ import annotations

from typing import Any

from aftersales.feedback.privacy import PersonalData
from aftersales.feedback.store import ComplaintStore, SurveyStore
from aftersales.shared.contracts.privacy import ExportRequested
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.errors import NotFound
from aftersales.shared.export import ExportLedger, Records


class FeedbackExport:
    """Feedback's answer to an export request: the customer's surveys and complaints."""

    def __init__(
        self,
        *,
        surveys: SurveyStore,
        complaints: ComplaintStore,
        personal_data: PersonalData,
        ledger: ExportLedger,
    ) -> None:
        self.surveys = surveys
        self.complaints = complaints
        self.personal_data = personal_data
        self.ledger = ledger

    async def on_export_requested(self, request: ExportRequested, _: CloudEvent) -> None:
        await self.ledger.answer(request, lambda: self._records(request))

    async def _records(self, request: ExportRequested) -> Records:
        surveys: list[dict[str, Any]] = []
        complaints: list[dict[str, Any]] = []
        for ticket_id in request.ticket_ids:
            survey_ids, complaint_ids = await self.personal_data._ticket_documents(ticket_id)
            for survey_id in survey_ids:
                survey = await self.surveys.get(survey_id)
                if survey is not None:
                    surveys.append(survey)
            for complaint_id in complaint_ids:
                try:
                    complaints.append(await self.complaints.get(complaint_id))
                except NotFound:
                    continue
        return {"surveys": surveys, "complaints": complaints}
