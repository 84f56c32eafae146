"""Feedback's MongoDB access: the ticket-facts copy, surveys and complaints (each with its outbox), timers.

A state change and its events are one atomic single-document write, guarded by the state it was decided
on (a lost race is a 409, never a half-write).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from pymongo.errors import DuplicateKeyError

from aftersales.feedback.domain import Complaint, ComplaintSource
from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.common import Category
from aftersales.shared.contracts.events import ComplaintScope, ComplaintState
from aftersales.shared.envelope import CloudEvent, new_event
from aftersales.shared.errors import Conflict, NotFound
from aftersales.shared.idempotency import apply_once
from aftersales.shared.mongo import IndexSpec
from aftersales.shared.openindex import OpenIndex
from aftersales.shared.outbox import new_with_events, with_events
from aftersales.shared.runtime import ServiceRuntime

SOURCE = "/aftersales/feedback"
SURVEYS, COMPLAINTS, TICKETS = "surveys", "complaints", "tickets"
HIDDEN = {"outbox": 0, "applied_events": 0, "outbox_lease": 0, "outbox_owner": 0, "outbox_pending": 0}

INDEXES = [
    IndexSpec(SURVEYS, [("ticket_id", 1), ("round", 1)], unique=True),
    IndexSpec(SURVEYS, [("status", 1)]),
    IndexSpec(COMPLAINTS, [("ticket_id", 1)]),
    IndexSpec(COMPLAINTS, [("state", 1)]),
    IndexSpec(COMPLAINTS, [("class_key", 1), ("opened_at", 1)]),
]


def events(models: Sequence[BaseModel], subject: str) -> list[CloudEvent]:
    return [new_event(m, source=SOURCE, subject=subject) for m in models]


def complaint_from(doc: Mapping[str, Any]) -> Complaint:
    return Complaint(
        id=doc["_id"],
        state=ComplaintState(doc["state"]),
        source=ComplaintSource(doc["source"]),
        scope=ComplaintScope(doc["scope"]),
        opened_at=doc["opened_at"],
        deadline_at=doc["deadline_at"],
        step_deadline_at=doc.get("step_deadline_at"),
        ticket_id=doc.get("ticket_id"),
        category=Category(doc["category"]) if doc.get("category") else None,
        product_model=doc.get("product_model"),
        owner_id=doc.get("owner_id"),
        seq=doc.get("seq", 1),
        cycle=doc.get("cycle", 0),
        escalated=doc.get("escalated", False),
        closed_at=doc.get("closed_at"),
    )


def complaint_fields(c: Complaint) -> dict[str, Any]:
    return {
        "state": c.state.value,
        "scope": c.scope.value,
        "owner_id": c.owner_id,
        "deadline_at": c.deadline_at,
        "step_deadline_at": c.step_deadline_at,
        "seq": c.seq,
        "cycle": c.cycle,
        "escalated": c.escalated,
        "closed_at": c.closed_at,
    }


def _history(
    action: str, now: datetime, by: str | None = None, note: str | None = None, **extra: Any
) -> dict[str, Any]:
    entry = {"at": now, "action": action, "by": by, "note": note, **extra}
    return {"$push": {"history": {"$each": [entry]}}}


class FeedbackStore:
    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime
        self.tickets = runtime.db[TICKETS]
        self.surveys = runtime.db[SURVEYS]
        self.complaints = runtime.db[COMPLAINTS]
        self.open = OpenIndex(runtime.db, COMPLAINTS)

    # ------------------------------------------------------------------ ticket facts

    async def remember_ticket(self, event_id: str, facts: Mapping[str, Any]) -> bool:
        update = {"$set": {**facts, "updated_at": datetime.now(UTC)}}
        return await apply_once(self.tickets, facts["ticket_id"], event_id, update, upsert=True)

    async def ticket(self, ticket_id: str | None) -> dict[str, Any] | None:
        return None if ticket_id is None else await self.tickets.find_one({"_id": ticket_id})

    # ------------------------------------------------------------------ surveys

    async def insert_survey(self, doc: dict[str, Any], models: Sequence[BaseModel]) -> bool:
        """Insert a survey with its SurveySent event; False when this resolution already has one."""
        try:
            await self.surveys.insert_one(
                new_with_events(doc, Topic.FEEDBACK, events(models, doc["ticket_id"]))
            )
        except DuplicateKeyError:
            return False
        self.runtime.relay.notify(SURVEYS, doc["_id"])
        return True

    async def survey(self, survey_id: str) -> dict[str, Any] | None:
        return await self.surveys.find_one({"_id": survey_id}, HIDDEN)

    async def submit_survey(
        self,
        survey_id: str,
        answer: Mapping[str, Any],
        models: Sequence[BaseModel],
        ticket_id: str,
        now: datetime,
    ) -> bool:
        """Record the answer once, only while the survey is open and unexpired; False otherwise."""
        update = with_events(
            {"$set": {**answer, "status": "submitted"}}, Topic.FEEDBACK, events(models, ticket_id)
        )
        result = await self.surveys.update_one(
            {"_id": survey_id, "status": "sent", "expires_at": {"$gt": now}}, update
        )
        if result.modified_count == 1:
            self.runtime.relay.notify(SURVEYS, survey_id)
        return result.modified_count == 1

    async def find_surveys(self, filters: Mapping[str, Any], limit: int) -> list[dict[str, Any]]:
        cursor = self.surveys.find(dict(filters), HIDDEN, sort=[("sent_at", 1)], limit=limit)
        return [d async for d in cursor]

    async def count_surveys(self, filters: Mapping[str, Any]) -> int:
        return await self.surveys.count_documents(dict(filters))

    async def answers(self, filters: Mapping[str, Any]) -> list[tuple[int, int | None]]:
        """Return (csat, nps) of answered surveys matching `filters`, summed per distinct pair."""
        pipeline: list[dict[str, Any]] = [
            {"$match": {**filters, "status": "submitted"}},
            {"$group": {"_id": {"csat": "$csat", "nps": "$nps"}, "n": {"$sum": 1}}},
        ]
        out: list[tuple[int, int | None]] = []
        async for row in await self.surveys.aggregate(pipeline):
            out += [(int(row["_id"]["csat"]), row["_id"].get("nps"))] * int(row["n"])
        return out

    # ------------------------------------------------------------------ complaints

    async def insert_complaint(
        self, c: Complaint, extra: Mapping[str, Any], models: Sequence[BaseModel], now: datetime
    ) -> bool:
        doc = {
            "_id": c.id,
            "source": c.source.value,
            "ticket_id": c.ticket_id,
            "category": c.category.value if c.category else None,
            "product_model": c.product_model,
            "opened_at": c.opened_at,
            **complaint_fields(c),
            **extra,
            "history": [{"at": now, "action": "opened", "by": extra.get("opened_by"), "note": None}],
            "updated_at": now,
        }
        await self.open.mark(c.id, _open_state(c))
        try:
            await self.complaints.insert_one(
                new_with_events(doc, Topic.FEEDBACK, events(models, c.ticket_id or c.id))
            )
        except DuplicateKeyError:
            return False
        self.runtime.relay.notify(COMPLAINTS, c.id)
        return True

    async def complaint_doc(self, complaint_id: str) -> dict[str, Any]:
        doc = await self.complaints.find_one({"_id": complaint_id}, HIDDEN)
        if doc is None:
            raise NotFound(f"complaint {complaint_id} not found")
        return doc

    async def find_complaints(self, filters: Mapping[str, Any], limit: int) -> list[dict[str, Any]]:
        cursor = self.complaints.find(dict(filters), HIDDEN, sort=[("opened_at", -1)], limit=limit)
        return [d async for d in cursor]

    async def count_similar(self, key: str, since: datetime, exclude_id: str) -> int:
        query = {"class_key": key, "opened_at": {"$gte": since}, "_id": {"$ne": exclude_id}}
        return await self.complaints.count_documents(query)

    async def individual_in_window(self, key: str, since: datetime) -> list[Complaint]:
        query = {"class_key": key, "opened_at": {"$gte": since}, "scope": ComplaintScope.INDIVIDUAL.value}
        return [complaint_from(d) async for d in self.complaints.find(query)]

    async def save_complaint(
        self,
        before: Complaint,
        after: Complaint,
        models: Sequence[BaseModel],
        now: datetime,
        *,
        action: str,
        by: str | None = None,
        note: str | None = None,
        guard_scope: bool = False,
    ) -> None:
        """Write a decided change if the complaint is still as `before`; 409 when it moved meanwhile."""
        fields = complaint_fields(after)
        if after.escalated == before.escalated:
            del fields["escalated"]  # a timer may escalate concurrently; never overwrite it with a stale read
        update = with_events(
            {"$set": {**fields, "updated_at": now}, **_history(action, now, by, note)},
            Topic.FEEDBACK,
            events(models, after.ticket_id or after.id),
        )
        guard: dict[str, Any] = {"_id": before.id, "state": before.state.value, "seq": before.seq}
        if guard_scope:
            guard["scope"] = before.scope.value
        await self.open.mark(after.id, _open_state(after))
        result = await self.complaints.update_one(guard, update)
        if result.modified_count != 1:
            raise Conflict(f"complaint {before.id} changed meanwhile; reload and try again")
        self.runtime.relay.notify(COMPLAINTS, before.id)

    async def escalate(
        self, timer_id: str, c: Complaint, models: Sequence[BaseModel], guard: Mapping[str, Any]
    ) -> bool:
        """Mark a complaint escalated once per timer (the timer id is the idempotency key)."""
        now = datetime.now(UTC)
        update = with_events(
            {
                "$set": {"escalated": True, "updated_at": now},
                "$inc": {"escalations": 1},
                **_history("escalated", now),
            },
            Topic.FEEDBACK,
            events(models, c.ticket_id or c.id),
        )
        applied = await apply_once(self.complaints, c.id, timer_id, update, extra_filter=guard)
        if applied:
            self.runtime.relay.notify(COMPLAINTS, c.id)
        return applied

    async def open_by_state(self) -> dict[str, int]:
        """Return open complaints by state, from the open-items index (no scan of the history)."""
        counts = await self.open.counts()
        return {s.value: counts.get(s.value, 0) for s in ComplaintState if s != ComplaintState.CLOSED}

    async def heal_open_index(self) -> int:
        async def state_of(complaint_id: str) -> str | None:
            doc = await self.complaints.find_one({"_id": complaint_id}, {"state": 1})
            return None if doc is None or doc["state"] == ComplaintState.CLOSED else str(doc["state"])

        return await self.open.heal(state_of)


def _open_state(c: Complaint) -> str | None:
    return None if c.state == ComplaintState.CLOSED else c.state.value
