"""Follow-up's MongoDB access: the ticket-facts copy, visits (with their outbox) and their durable timers.

Every state change and the events it causes is one atomic single-document write; timers are scheduled
before the change they belong to, and their handlers check the visit's `seq`, so a stale timer is a no-op.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from pymongo.errors import DuplicateKeyError

from aftersales.followup import messages
from aftersales.followup.domain import (
    OPEN_STATUSES,
    CustomerFacts,
    FollowUpPolicy,
    Visit,
    VisitStatus,
    overdue_at,
    visit_id_for,
)
from aftersales.followup.timers import NEXT_CARE, VISIT_DUE, VISIT_OVERDUE
from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.common import CustomerTier
from aftersales.shared.contracts.events import VisitKind, VisitOutcome
from aftersales.shared.envelope import CloudEvent, new_event
from aftersales.shared.errors import NotFound, RetryLater
from aftersales.shared.idempotency import apply_once
from aftersales.shared.mongo import Database, IndexSpec
from aftersales.shared.openindex import OpenIndex
from aftersales.shared.outbox import new_with_events, with_events
from aftersales.shared.runtime import ServiceRuntime

SOURCE = "/aftersales/followup"
VISITS, TICKETS, CUSTOMERS = "visits", "tickets", "customers"
HIDDEN = {"outbox": 0, "applied_events": 0}
ERASE_TRIES = 5

INDEXES = [
    IndexSpec(VISITS, [("status", 1), ("due_at", 1)]),
    IndexSpec(VISITS, [("ticket_id", 1), ("round", 1)]),
    IndexSpec(VISITS, [("grid_id", 1), ("status", 1)]),
    IndexSpec(VISITS, [("agent_id", 1), ("status", 1)]),
    IndexSpec(VISITS, [("customer_id", 1), ("kind", 1), ("status", 1)]),
]


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One line of a visit's history: what was done, by whom, with the agent's (redacted) note."""

    action: str
    by: str | None = None
    note: str | None = None
    on_behalf_of: str | None = None

    def push(self, now: datetime) -> dict[str, Any]:
        entry: dict[str, Any] = {"at": now, "action": self.action, "by": self.by, "note": self.note}
        if self.on_behalf_of is not None:
            entry["on_behalf_of"] = self.on_behalf_of
        return {"$push": {"history": {"$each": [entry]}}}


def _events(models: Sequence[BaseModel], ticket_id: str) -> list[CloudEvent]:
    return [new_event(m, source=SOURCE, subject=ticket_id) for m in models]


def visit_from(doc: Mapping[str, Any]) -> Visit:
    kind = VisitKind(doc["kind"])
    # Care visits are for key accounts only; a document without a tier predates the field.
    tier = doc.get("customer_tier") or (
        CustomerTier.KEY_ACCOUNT if kind == VisitKind.CARE else CustomerTier.STANDARD
    )
    return Visit(
        id=doc["_id"],
        ticket_id=doc["ticket_id"],
        kind=kind,
        status=VisitStatus(doc["status"]),
        round=doc["round"],
        due_at=doc["due_at"],
        deadline_at=doc["deadline_at"],
        timezone=doc.get("timezone", "UTC"),
        attempt=doc.get("attempt", 1),
        seq=doc.get("seq", 1),
        grid_id=doc.get("grid_id"),
        technician_id=doc.get("technician_id"),
        agent_id=doc.get("agent_id"),
        customer_id=doc.get("customer_id"),
        care_n=doc.get("care_n"),
        outcome=VisitOutcome(doc["outcome"]) if doc.get("outcome") else None,
        customer_tier=CustomerTier(tier),
    )


def _fields(visit: Visit) -> dict[str, Any]:
    return {
        "status": visit.status.value,
        "due_at": visit.due_at,
        "deadline_at": visit.deadline_at,
        "attempt": visit.attempt,
        "seq": visit.seq,
        "agent_id": visit.agent_id,
        "outcome": visit.outcome.value if visit.outcome else None,
    }


def _new_document(visit: Visit, now: datetime) -> dict[str, Any]:
    return {
        "_id": visit.id,
        "ticket_id": visit.ticket_id,
        "kind": visit.kind.value,
        "round": visit.round,
        "timezone": visit.timezone,
        "grid_id": visit.grid_id,
        "technician_id": visit.technician_id,
        "customer_id": visit.customer_id,
        "customer_tier": visit.customer_tier.value,
        "care_n": visit.care_n,
        **_fields(visit),
        "history": [{"at": now, "action": "scheduled", "by": None, "note": None}],
        "created_at": now,
        "updated_at": now,
    }


def _open() -> list[str]:
    return [s.value for s in OPEN_STATUSES]


class TicketFactsStore:
    """The local copy of intake's ticket facts: the customer, the status and the current round."""

    def __init__(self, db: Database) -> None:
        self.tickets = db[TICKETS]

    async def remember(self, event_id: str, facts: Mapping[str, Any], round_: int) -> bool:
        """Keep (or refresh) the local copy of a ticket's facts; return True if this event changed it."""
        update = {"$set": {**facts, "status": "open", "round": round_, "updated_at": datetime.now(UTC)}}
        return await apply_once(self.tickets, facts["ticket_id"], event_id, update, upsert=True)

    async def mark(self, event_id: str, ticket_id: str, status: str) -> bool:
        update = {"$set": {"status": status, "updated_at": datetime.now(UTC)}}
        return await apply_once(self.tickets, ticket_id, event_id, update, upsert=True)

    async def status(self, ticket_id: str) -> str | None:
        doc = await self.tickets.find_one({"_id": ticket_id}, {"status": 1})
        return None if doc is None else doc.get("status")

    async def rounds(self, ticket_id: str) -> int:
        """Return how many rounds (resolutions and reopens) the ticket has had; 1 when unknown."""
        doc = await self.tickets.find_one({"_id": ticket_id}, {"round": 1})
        return int((doc or {}).get("round", 1))

    async def customer_of(self, ticket_id: str) -> CustomerFacts:
        """Return the ticket's customer facts; defaults when intake's event has not arrived (yet)."""
        doc = await self.tickets.find_one({"_id": ticket_id})
        if doc is None or not doc.get("customer_id"):
            return CustomerFacts()
        tier = doc.get("customer_tier", CustomerTier.STANDARD.value)
        return CustomerFacts(
            customer_id=doc["customer_id"],
            tier=CustomerTier(tier) if tier in CustomerTier._value2member_map_ else CustomerTier.STANDARD,
            timezone=doc.get("customer_timezone") or "UTC",
        )


class VisitStore:
    """Visits, each customer's care-visit counter, the open-visits index and the visits' timers."""

    def __init__(self, runtime: ServiceRuntime, policy: FollowUpPolicy) -> None:
        self.runtime = runtime
        self.policy = policy
        self.visits = runtime.db[VISITS]
        self.customers = runtime.db[CUSTOMERS]
        self.open = OpenIndex(runtime.db, VISITS)
        self.noted: Callable[[str, datetime], Awaitable[None]] | None = None  # a note written: retention

    # ------------------------------------------------------------------ creating visits

    async def next_care(self, customer_id: str | None) -> int | None:
        """Return the number of the care visit a resolution should plan for the customer, or None when
        the customer's latest care visit is still open (read by `_id`, no query).

        `create` records a care number before it inserts that visit, so a latest number whose visit is
        missing is being created right now by a concurrent handler (or a crash came in between): the
        same number is planned again, and the visit's unique `_id` keeps it to one."""
        if customer_id is None:
            return None  # without a customer there is no one to plan care visits for
        latest = await self._latest_care(customer_id)
        if latest == 0:
            return 1
        doc = await self.visits.find_one(
            {"_id": visit_id_for("", 0, VisitKind.CARE, customer_id, latest)}, {"status": 1}
        )
        if doc is None:
            return latest
        return None if doc["status"] in _open() else latest + 1

    async def _latest_care(self, customer_id: str) -> int:
        doc = await self.customers.find_one({"_id": customer_id}, {"care_n": 1})
        return int((doc or {}).get("care_n", 0))

    async def create(self, visit: Visit) -> bool:
        """Insert a scheduled visit with its VisitScheduled event; False when it already exists."""
        if await self.visits.find_one({"_id": visit.id}, {"_id": 1}) is not None:
            return False
        now = datetime.now(UTC)
        await self._schedule_timers(visit)
        await self.open.mark(visit.id, visit.status.value)
        if visit.kind == VisitKind.CARE and visit.customer_id:  # the customer's latest care number
            await self.customers.update_one(
                {"_id": visit.customer_id}, {"$max": {"care_n": visit.care_n}}, upsert=True
            )
        events = _events([messages.scheduled(visit, now)], visit.ticket_id)
        try:
            await self.visits.insert_one(new_with_events(_new_document(visit, now), Topic.FOLLOWUPS, events))
        except DuplicateKeyError:
            return False
        self.runtime.relay.notify(VISITS, visit.id)
        return True

    # ------------------------------------------------------------------ reading

    async def find_visit(self, visit_id: str) -> Visit | None:
        doc = await self.visits.find_one({"_id": visit_id}, HIDDEN)
        return None if doc is None else visit_from(doc)

    async def load(self, visit_id: str) -> Visit:
        """Return the visit; 404 when there is none."""
        return visit_from(await self.get(visit_id))

    async def get(self, visit_id: str) -> dict[str, Any]:
        """Return the visit's document as the API shows it (with its history); 404 when there is none."""
        doc = await self.visits.find_one({"_id": visit_id}, HIDDEN)
        if doc is None:
            raise NotFound(f"visit {visit_id} not found")
        return doc

    async def find(self, equal_to: Mapping[str, str | None], limit: int) -> list[dict[str, Any]]:
        """Return visit documents whose fields equal the given values (None: any), by due time."""
        query = {name: value for name, value in equal_to.items() if value is not None}
        cursor = self.visits.find(query, HIDDEN, sort=[("due_at", 1)], limit=limit)
        return [doc async for doc in cursor]

    async def open_visits(self, ticket_id: str, rounds: int) -> list[Visit]:
        """Return the ticket's open callbacks and on-site checks, read by their ids (one per round)."""
        out = []
        for round_ in range(1, rounds + 1):
            for kind in (k for k in VisitKind if k != VisitKind.CARE):
                found = await self.visits.find_one({"_id": visit_id_for(ticket_id, round_, kind, None, 0)})
                if found is not None and found["status"] in _open():
                    out.append(visit_from(found))
        return out

    async def count_open(self) -> dict[str, int]:
        """Return open visits by status, from the open-items index (no scan of the history)."""
        return await self.open.counts()

    async def heal_open_index(self) -> int:
        async def status_of(visit_id: str) -> str | None:
            doc = await self.visits.find_one({"_id": visit_id}, {"status": 1})
            return doc["status"] if doc is not None and doc["status"] in _open() else None

        return await self.open.heal(status_of)

    # ------------------------------------------------------------------ changing

    async def write(
        self, before: Visit, after: Visit, models: Sequence[BaseModel], entry: HistoryEntry
    ) -> bool:
        """Write a decided change and its events if the visit is still as `before` was read; False when
        it changed meanwhile (the caller reloads and decides again). A new schedule's timers are set
        before the write, the old schedule's cancelled after it."""
        if after.seq != before.seq and after.is_open:
            await self._schedule_timers(after)
        now = datetime.now(UTC)
        if entry.note and self.noted is not None:
            await self.noted(before.id, now)
        update = with_events(
            {"$set": {**_fields(after), "updated_at": now}, **entry.push(now)},
            Topic.FOLLOWUPS,
            _events(models, after.ticket_id),
        )
        guard = {"_id": before.id, "status": before.status.value, "seq": before.seq}
        await self.open.mark(after.id, after.status.value if after.is_open else None)
        result = await self.visits.update_one(guard, update)
        if result.modified_count != 1:
            return False
        if after.seq != before.seq or not after.is_open:
            await self._cancel_timers(before)
        self.runtime.relay.notify(VISITS, before.id)
        return True

    async def cancel(self, visit: Visit, reason: str) -> bool:
        """Cancel an open visit with its VisitCancelled event; False when it was closed already."""
        now = datetime.now(UTC)
        after = replace(visit, status=VisitStatus.CANCELLED)
        update = with_events(
            {
                "$set": {**_fields(after), "updated_at": now},
                **HistoryEntry("cancelled", note=reason).push(now),
            },
            Topic.FOLLOWUPS,
            _events([messages.cancelled(after, now, reason)], visit.ticket_id),
        )
        await self.open.mark(visit.id, None)
        result = await self.visits.update_one({"_id": visit.id, "status": {"$in": _open()}}, update)
        await self._cancel_timers(visit)
        if result.modified_count:
            self.runtime.relay.notify(VISITS, visit.id)
        return result.modified_count == 1

    async def mark_due(self, timer_id: str, visit: Visit) -> bool:
        """Move a scheduled visit to `due` once per timer; True when this call did so."""
        now = datetime.now(UTC)
        update = with_events(
            {"$set": {"status": VisitStatus.DUE.value, "updated_at": now}, **HistoryEntry("due").push(now)},
            Topic.FOLLOWUPS,
            _events([messages.due(visit, now)], visit.ticket_id),
        )
        guard = {"status": VisitStatus.SCHEDULED.value, "seq": visit.seq}
        return await self._apply_timer(timer_id, visit.id, update, guard)

    async def mark_missed(self, timer_id: str, visit: Visit) -> bool:
        """Mark a still-open visit missed once per timer; True when this call did so."""
        now = datetime.now(UTC)
        gone = replace(visit, status=VisitStatus.MISSED)
        update = with_events(
            {"$set": {"status": gone.status.value, "updated_at": now}, **HistoryEntry("missed").push(now)},
            Topic.FOLLOWUPS,
            _events([messages.missed(gone, now)], visit.ticket_id),
        )
        return await self._apply_timer(
            timer_id, visit.id, update, {"status": {"$in": _open()}, "seq": visit.seq}
        )

    async def _apply_timer(
        self, timer_id: str, visit_id: str, update: Mapping[str, Any], guard: Mapping[str, Any]
    ) -> bool:
        if not await apply_once(self.visits, visit_id, timer_id, update, extra_filter=guard):
            return False
        self.runtime.relay.notify(VISITS, visit_id)
        return True

    # ------------------------------------------------------------------ timers

    async def _cancel_timers(self, visit: Visit) -> None:
        """Cancel the timers of the visit's current schedule, by id (a group query would scan)."""
        for kind in ("due", "overdue"):
            await self.runtime.timers.cancel(f"{visit.id}:{kind}:{visit.seq}")

    async def _schedule_timers(self, visit: Visit) -> None:
        payload = {"visit_id": visit.id, "seq": visit.seq}
        timers = self.runtime.timers
        await timers.schedule(f"{visit.id}:due:{visit.seq}", VISIT_DUE, visit.due_at, payload, group=visit.id)
        await timers.schedule(
            f"{visit.id}:overdue:{visit.seq}",
            VISIT_OVERDUE,
            overdue_at(self.policy, visit),
            payload,
            group=visit.id,
        )

    async def schedule_next_care(self, care: Visit, at: datetime) -> None:
        """Arm the timer that creates the care visit following `care` (idempotent by id)."""
        await self.runtime.timers.schedule(f"{care.id}:next_care", NEXT_CARE, at, {"visit_id": care.id})


class VisitNotes:
    """The notes on a customer's visits, for an erasure (PIPL): visits found by their derived ids."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.visits = runtime.db[VISITS]
        self.customers = runtime.db[CUSTOMERS]

    async def customer_visit_ids(
        self, customer_id: str, ticket_ids: Sequence[str], tickets: TicketFactsStore
    ) -> list[str]:
        """Return the ids of the visits that may exist for these tickets and the customer's care visits
        (derived ids, read by `_id` later: no query)."""
        doc = await self.customers.find_one({"_id": customer_id}, {"care_n": 1})
        latest = int((doc or {}).get("care_n", 0))
        ids = [visit_id_for("", 0, VisitKind.CARE, customer_id, n) for n in range(1, latest + 1)]
        for ticket_id in ticket_ids:
            for round_ in range(1, await tickets.rounds(ticket_id) + 1):
                ids += [visit_id_for(ticket_id, round_, k, None, 0) for k in VisitKind if k != VisitKind.CARE]
        return ids

    async def notes_activity(self, visit_id: str) -> datetime | None:
        """Return when the visit last changed; None when it has no notes (left)."""
        doc = await self.visits.find_one({"_id": visit_id}, {"history": 1, "updated_at": 1})
        if doc is None or not any(entry.get("note") for entry in doc.get("history", [])):
            return None
        return doc.get("updated_at") or datetime.min.replace(tzinfo=UTC)

    async def erase_notes(self, visit_id: str, *, active_until: datetime | None = None) -> bool:
        """Remove the notes from a visit's history (an agent's note may name the customer); True when it
        had any. Guarded by `updated_at`, so a concurrent change is not overwritten; with `active_until`
        (retention), only a visit unchanged since then."""
        for _ in range(ERASE_TRIES):
            doc = await self.visits.find_one({"_id": visit_id}, {"history": 1, "updated_at": 1})
            if doc is None or not any(entry.get("note") for entry in doc.get("history", [])):
                return False
            if active_until is not None and (doc.get("updated_at") or active_until) > active_until:
                return False
            history = [{**entry, "note": None} for entry in doc["history"]]
            guard = {"_id": visit_id, "updated_at": doc.get("updated_at")}
            if (await self.visits.update_one(guard, {"$set": {"history": history}})).modified_count == 1:
                return True
        raise RetryLater(f"visit {visit_id} kept changing while its notes were erased")
