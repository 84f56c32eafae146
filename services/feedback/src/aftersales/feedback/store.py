"""Feedback's MongoDB access: the ticket-facts copy, surveys and complaints (each with its outbox), timers.

A state change and its events are one atomic single-document write, guarded by the state it was decided
on (a lost race is reported as False, never a half-write: the service decides again).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from pymongo.errors import DuplicateKeyError

from aftersales.feedback.domain import Complaint, ComplaintSource
from aftersales.feedback.timers import CLOSE_OVERDUE, STEP_OVERDUE
from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.common import Category
from aftersales.shared.contracts.events import ComplaintScope, ComplaintState
from aftersales.shared.envelope import CloudEvent, new_event
from aftersales.shared.errors import NotFound, RetryLater
from aftersales.shared.idempotency import apply_once
from aftersales.shared.mongo import Database, IndexSpec
from aftersales.shared.openindex import OpenIndex
from aftersales.shared.outbox import new_with_events, with_events
from aftersales.shared.runtime import ServiceRuntime

SOURCE = "/aftersales/feedback"
SURVEYS, COMPLAINTS, TICKETS = "surveys", "complaints", "tickets"
ERASE_TRIES = 5
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


class SurveyStore:
    """One survey per resolution (ticket, round), with its answer."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime
        self.surveys = runtime.db[SURVEYS]

    async def insert(self, doc: dict[str, Any], models: Sequence[BaseModel]) -> bool:
        """Insert a survey with its SurveySent event; False when this resolution already has one."""
        try:
            await self.surveys.insert_one(
                new_with_events(doc, Topic.FEEDBACK, events(models, doc["ticket_id"]))
            )
        except DuplicateKeyError:
            return False
        self.runtime.relay.notify(SURVEYS, doc["_id"])
        return True

    async def get(self, survey_id: str) -> dict[str, Any] | None:
        return await self.surveys.find_one({"_id": survey_id}, HIDDEN)

    async def submit(
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

    async def erase_comment(self, survey_id: str, *, active_until: datetime | None = None) -> bool:
        """Remove the customer's comment from a survey's answer; True when it had one (the scores stay).
        With `active_until` (retention), only from an answer submitted by then (one guarded write)."""
        guard: dict[str, Any] = {"_id": survey_id, "comment": {"$ne": None}}
        if active_until is not None:
            guard["submitted_at"] = {"$lte": active_until}
        result = await self.surveys.update_one(guard, {"$set": {"comment": None}})
        return result.modified_count == 1

    async def comment_activity(self, survey_id: str) -> datetime | None:
        """Return when the survey's comment was written; None when it has none (left)."""
        doc = await self.surveys.find_one({"_id": survey_id}, {"comment": 1, "submitted_at": 1})
        if doc is None or doc.get("comment") is None:
            return None
        return doc.get("submitted_at") or datetime.min.replace(tzinfo=UTC)

    async def exists(self, survey_id: str) -> bool:
        return await self.surveys.find_one({"_id": survey_id}, {"_id": 1}) is not None

    async def find(self, equal_to: Mapping[str, str | None], limit: int) -> list[dict[str, Any]]:
        """Return surveys whose fields equal the given values (None: any), oldest first."""
        cursor = self.surveys.find(_equal(equal_to), HIDDEN, sort=[("sent_at", 1)], limit=limit)
        return [d async for d in cursor]

    async def count(self, equal_to: Mapping[str, str | None]) -> int:
        return await self.surveys.count_documents(_equal(equal_to))

    async def answers(self, equal_to: Mapping[str, str | None]) -> list[tuple[int, int | None]]:
        """Return (csat, nps) of answered surveys matching `equal_to`, summed per distinct pair."""
        pipeline: list[dict[str, Any]] = [
            {"$match": {**_equal(equal_to), "status": "submitted"}},
            {"$group": {"_id": {"csat": "$csat", "nps": "$nps"}, "n": {"$sum": 1}}},
        ]
        out: list[tuple[int, int | None]] = []
        async for row in await self.surveys.aggregate(pipeline):
            out += [(int(row["_id"]["csat"]), row["_id"].get("nps"))] * int(row["n"])
        return out


class TicketFactsStore:
    """The local copy of intake's ticket facts (category, product model, who submitted it)."""

    def __init__(self, db: Database) -> None:
        self.tickets = db[TICKETS]

    async def remember(self, event_id: str, facts: Mapping[str, Any]) -> bool:
        update = {"$set": {**facts, "updated_at": datetime.now(UTC)}}
        return await apply_once(self.tickets, facts["ticket_id"], event_id, update, upsert=True)

    async def get(self, ticket_id: str | None) -> dict[str, Any] | None:
        return None if ticket_id is None else await self.tickets.find_one({"_id": ticket_id})

    async def note_complaint(self, ticket_id: str, complaint_id: str) -> None:
        """Index a complaint under its ticket (written ahead of the complaint), so an erasure finds it by
        `_id`; a ticket has a handful of complaints."""
        await self.tickets.update_one(
            {"_id": ticket_id}, {"$addToSet": {"complaint_ids": complaint_id}}, upsert=True
        )

    async def complaint_ids(self, ticket_id: str) -> list[str]:
        doc = await self.tickets.find_one({"_id": ticket_id}, {"complaint_ids": 1})
        return list((doc or {}).get("complaint_ids", []))


class ComplaintStore:
    """Complaints (with their outbox) and the open-complaints index."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime
        self.complaints = runtime.db[COMPLAINTS]
        self.open = OpenIndex(runtime.db, COMPLAINTS)

    async def insert(
        self, c: Complaint, extra: Mapping[str, Any], models: Sequence[BaseModel], now: datetime
    ) -> bool:
        """Insert a new complaint with its events; False when one with its id exists already."""
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

    async def erase_text(self, complaint_id: str, *, active_until: datetime | None = None) -> bool:
        """Remove the summary and the notes of a complaint (what the customer said, what staff noted);
        True when it had any. Guarded by `updated_at`, so a concurrent change is not overwritten; with
        `active_until` (retention), only a complaint unchanged since then."""
        for _ in range(ERASE_TRIES):
            doc = await self._text_of(complaint_id)
            if doc is None:
                return False
            if active_until is not None and _changed_at(doc) > active_until:
                return False
            history = doc.get("history", [])
            update = {"$set": {"summary": None, "history": [{**entry, "note": None} for entry in history]}}
            guard = {"_id": complaint_id, "updated_at": doc.get("updated_at")}
            if (await self.complaints.update_one(guard, update)).modified_count == 1:
                return True
        raise RetryLater(f"complaint {complaint_id} kept changing while its text was erased")

    async def text_activity(self, complaint_id: str) -> datetime | None:
        """Return when the complaint last changed; None when it holds no summary or notes (left)."""
        doc = await self._text_of(complaint_id)
        return None if doc is None else _changed_at(doc)

    async def _text_of(self, complaint_id: str) -> dict[str, Any] | None:
        """The complaint's summary, history and last change; None when it holds no text."""
        doc = await self.complaints.find_one(
            {"_id": complaint_id}, {"summary": 1, "history": 1, "updated_at": 1}
        )
        history = (doc or {}).get("history", [])
        if doc is None or not (doc.get("summary") or any(entry.get("note") for entry in history)):
            return None
        return dict(doc)

    async def find_complaint(self, complaint_id: str) -> Complaint | None:
        doc = await self.complaints.find_one({"_id": complaint_id}, HIDDEN)
        return None if doc is None else complaint_from(doc)

    async def load(self, complaint_id: str) -> Complaint:
        """Return the complaint; 404 when there is none."""
        return complaint_from(await self.get(complaint_id))

    async def get(self, complaint_id: str) -> dict[str, Any]:
        """Return the complaint's document as the API shows it (with its history); 404 when none."""
        doc = await self.complaints.find_one({"_id": complaint_id}, HIDDEN)
        if doc is None:
            raise NotFound(f"complaint {complaint_id} not found")
        return doc

    async def find(self, equal_to: Mapping[str, str | bool | None], limit: int) -> list[dict[str, Any]]:
        """Return complaints whose fields equal the given values (None: any), newest first."""
        cursor = self.complaints.find(_equal(equal_to), HIDDEN, sort=[("opened_at", -1)], limit=limit)
        return [d async for d in cursor]

    async def count_similar(self, key: str, since: datetime, exclude_id: str) -> int:
        query = {"class_key": key, "opened_at": {"$gte": since}, "_id": {"$ne": exclude_id}}
        return await self.complaints.count_documents(query)

    async def individual_in_window(self, key: str, since: datetime) -> list[Complaint]:
        query = {"class_key": key, "opened_at": {"$gte": since}, "scope": ComplaintScope.INDIVIDUAL.value}
        return [complaint_from(d) async for d in self.complaints.find(query)]

    async def save(
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
    ) -> bool:
        """Write a decided change if the complaint is still as `before`; False when it moved meanwhile."""
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
            return False
        self.runtime.relay.notify(COMPLAINTS, before.id)
        return True

    async def escalate_step(self, timer_id: str, c: Complaint, models: Sequence[BaseModel]) -> bool:
        """Escalate a complaint still in step `c.seq`, once per timer."""
        return await self._escalate(timer_id, c, models, {"seq": c.seq, "state": c.state.value})

    async def escalate_close(self, timer_id: str, c: Complaint, models: Sequence[BaseModel]) -> bool:
        """Escalate a complaint of cycle `c.cycle` that is still open, once per timer."""
        guard = {"cycle": c.cycle, "state": {"$ne": ComplaintState.CLOSED.value}}
        return await self._escalate(timer_id, c, models, guard)

    async def _escalate(
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

    # ------------------------------------------------------------------ deadlines (timers.py)

    async def arm_deadlines(self, c: Complaint) -> None:
        """Arm the timers of the complaint's current step and cycle (before the write they belong to)."""
        timers = self.runtime.timers
        if c.step_deadline_at is not None:
            payload = {"complaint_id": c.id, "seq": c.seq}
            await timers.schedule(
                f"{c.id}:step:{c.seq}", STEP_OVERDUE, c.step_deadline_at, payload, group=c.id
            )
        if c.state != ComplaintState.CLOSED:
            payload = {"complaint_id": c.id, "cycle": c.cycle}
            await timers.schedule(
                f"{c.id}:close:{c.cycle}", CLOSE_OVERDUE, c.deadline_at, payload, group=c.id
            )

    async def disarm_stale_deadlines(self, before: Complaint, after: Complaint) -> None:
        """Cancel the timers of a step or cycle the complaint has left."""
        if after.seq != before.seq:
            await self.runtime.timers.cancel(f"{before.id}:step:{before.seq}")
        if after.state == ComplaintState.CLOSED or after.cycle != before.cycle:
            await self.runtime.timers.cancel(f"{before.id}:close:{before.cycle}")


def _changed_at(doc: Mapping[str, Any]) -> datetime:
    return doc.get("updated_at") or datetime.min.replace(tzinfo=UTC)


def _equal(equal_to: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in equal_to.items() if value is not None}


def _open_state(c: Complaint) -> str | None:
    return None if c.state == ComplaintState.CLOSED else c.state.value
