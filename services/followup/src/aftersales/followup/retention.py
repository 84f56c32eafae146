"""Retention (PIPL) in follow-up: the agents' notes on a visit (the only text here that may name a person
or a place) are removed when the visit has not changed for `RETENTION_VISIT_NOTES_DAYS`, by the
erasure's own code (`VisitNotes.erase_notes`). The visit, its outcome and its times stay, so KPIs keep
counting. A visit is armed when a note is written (`VisitStore.noted`); scheduling is the shared one
(`aftersales.shared.retention`).
"""

from __future__ import annotations

from datetime import datetime

from aftersales.followup.store import VisitNotes
from aftersales.shared.retention import Retention
from aftersales.shared.runtime import ServiceRuntime

VISIT_NOTES = "visit_notes"  # `_id` = visit id


class FollowupRetention:
    """Follow-up's one kind of personal data, the notes on visits, with its period."""

    def __init__(self, runtime: ServiceRuntime, notes: VisitNotes, *, notes_days: float) -> None:
        self.notes = notes
        self.schedule = Retention(runtime, service="followup")
        self.schedule.kind(
            VISIT_NOTES, days=notes_days, activity=notes.notes_activity, pseudonymise=self._erase
        )

    async def noted(self, visit_id: str, at: datetime) -> None:
        """A note was written on the visit at `at`: arm its removal."""
        await self.schedule.arm(VISIT_NOTES, visit_id, at)

    async def _erase(self, visit_id: str, active_until: datetime) -> bool:
        return await self.notes.erase_notes(visit_id, active_until=active_until)
