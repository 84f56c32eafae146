"""Personal-data rights in feedback (PIPL). Feedback keeps no contact points (surveys and complaints name
tickets, never an address); what may be personal is text: a survey answer's comment, a complaint's
summary and the notes on its steps (redacted of phone numbers and e-mail addresses when written, but
text can still name a person or an address). An erasure removes that text from the documents of the
customer's tickets, found by `_id`: surveys `SV-<ticket>-r<round>`, the derived complaints
(`CP-<ticket>-channel`, `CP-SV-<ticket>-r<round>`) and the complaint ids indexed on the ticket's facts
document. Scores, states and deadlines stay (KPIs keep their counts). Retention (`retention.py`)
removes the same text record by record with the same store functions (`erase_comment`, `erase_text`).
"""

from __future__ import annotations

from aftersales.feedback.store import ComplaintStore, SurveyStore, TicketFactsStore
from aftersales.shared.contracts.privacy import ErasureRequested
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.privacy import ErasureLedger

MAX_ROUNDS = 100  # a ticket's resolutions (rounds) are far fewer; bounds the look-ups of a ticket


class PersonalData:
    """Erasure of the customer's words kept in surveys and complaints."""

    def __init__(
        self,
        *,
        surveys: SurveyStore,
        complaints: ComplaintStore,
        tickets: TicketFactsStore,
        ledger: ErasureLedger,
    ) -> None:
        self.surveys = surveys
        self.complaints = complaints
        self.tickets = tickets
        self.ledger = ledger

    async def on_erasure_requested(self, request: ErasureRequested, _: CloudEvent) -> None:
        async def erase() -> dict[str, int]:
            counts = {"survey_comments": 0, "complaint_texts": 0}
            for ticket_id in request.ticket_ids:
                surveys, complaint_ids = await self._ticket_documents(ticket_id)
                counts["survey_comments"] += sum([await self.surveys.erase_comment(s) for s in surveys])
                counts["complaint_texts"] += sum([await self.complaints.erase_text(c) for c in complaint_ids])
            return counts

        await self.ledger.apply(request, erase)

    async def _ticket_documents(self, ticket_id: str) -> tuple[list[str], list[str]]:
        """Return the ids of a ticket's surveys (one per round, until a round without one) and of the
        complaints that may belong to it."""
        surveys: list[str] = []
        for round_ in range(1, MAX_ROUNDS + 1):
            survey_id = f"SV-{ticket_id}-r{round_}"
            if not await self.surveys.exists(survey_id):
                break
            surveys.append(survey_id)
        derived = [f"CP-{ticket_id}-channel", *(f"CP-{s}" for s in surveys)]
        indexed = await self.tickets.complaint_ids(ticket_id)
        return surveys, list(dict.fromkeys([*derived, *indexed]))
