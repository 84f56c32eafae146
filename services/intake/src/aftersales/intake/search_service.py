"""Ticket search, the service part: keeping the index in step with the tickets (from intake's own
`aftersales.tickets.v1` stream, in batches, in a consumer group of its own) and answering searches.

The index follows the ticket stream, so it is eventually consistent (a ticket is found once its
`ticket.created` has been read back, normally well under a second); a search checks every candidate
against the ticket as stored now, so it never shows a ticket that no longer matches. Erasing a
customer's data re-indexes its tickets at once (see `privacy`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from pymongo.asynchronous.database import AsyncDatabase

from aftersales.intake.search import SearchQuery, matches, seal, ticket_terms
from aftersales.intake.search_store import Hits, SearchIndex
from aftersales.shared.contracts.events import WorkOrderResolved
from aftersales.shared.envelope import CloudEvent, PoisonEvent
from aftersales.shared.kafka import Delivery

RESOLVED = "aftersales.assignment.resolved.v1"
# The events that change what a ticket is found by: its text, customer, product or region, and whether
# it is open or done (a resolution comes from routing's stream; the rest from intake's own).
INDEXED_TYPES = frozenset(
    {
        "aftersales.ticket.created.v1",
        "aftersales.ticket.updated.v1",
        "aftersales.ticket.reopened.v1",
        "aftersales.ticket.closed.v1",
        "aftersales.ticket.cancelled.v1",
        RESOLVED,
    }
)
_TICKET_FIELDS = {
    **dict.fromkeys(("title", "description", "customer_id", "product", "region_code", "status"), 1),
    **dict.fromkeys(("priority", "category", "channel"), 1),
    "assignment_mark": 1,
    "resolved_at": 1,
}


class TicketSearch:
    """Indexes tickets and searches them."""

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        *,
        key: bytes,
        tickets: str = "tickets",
        customers: str = "customers",
    ) -> None:
        self.db = db
        self.key = key
        self.tickets = tickets
        self.index = SearchIndex(db, tickets=tickets, customers=customers)

    async def on_ticket_event(self, event: CloudEvent) -> None:
        await self.refresh(_ticket_ids([event]), _resolutions([event]))

    async def on_ticket_events(self, deliveries: Sequence[Delivery]) -> None:
        events = [d.event for d in deliveries]
        await self.refresh(_ticket_ids(events), _resolutions(events))

    async def refresh(
        self, ticket_ids: Iterable[str], resolutions: Mapping[str, tuple[int, datetime]] | None = None
    ) -> int:
        """Index the tickets as they are stored now (a missing one is taken out); return how many
        changed in the index. A resolution read from routing's stream may reach this group before
        intake's timeline group has applied it: the ticket is then indexed as resolved (the event is
        newer than what the ticket shows, so it is what the ticket is about to show)."""
        ids = list(dict.fromkeys(ticket_ids))
        if not ids:
            return 0
        docs = await asyncio.gather(
            *(self.db[self.tickets].find_one({"_id": t}, _TICKET_FIELDS) for t in ids)
        )
        docs = [
            _as_resolved(doc) if doc and _ahead(doc, (resolutions or {}).get(t)) else doc
            for t, doc in zip(ids, docs, strict=True)
        ]
        names = await self.index.names(d.get("customer_id") for d in docs if d)
        terms: dict[str, Sequence[str] | None] = {
            t: seal(ticket_terms(d, names.get(d.get("customer_id") or "")), self.key) if d else None
            for t, d in zip(ids, docs, strict=True)
        }
        return await self.index.put(terms)

    async def search(
        self,
        query: SearchQuery,
        *,
        visible: Callable[[Mapping[str, Any]], bool],
        limit: int,
        before: int | None,
        max_reads: int,
    ) -> Hits:
        terms = seal(query.terms(facets=await self.index.has_facets()), self.key)
        return await self.index.search(
            query, terms, visible=visible, limit=limit, before=before, max_reads=max_reads
        )

    async def by_id(
        self, ticket_id: str, query: SearchQuery, *, visible: Callable[[Mapping[str, Any]], bool]
    ) -> list[dict[str, Any]]:
        """The ticket with this id when it also answers the rest of the query (and may be seen)."""
        (doc,) = await self.index.read_tickets([ticket_id])
        if doc is None or not visible(doc):
            return []
        names = await self.index.names([doc.get("customer_id")]) if query.name else {}
        return [doc] if matches(query, doc, names.get(doc.get("customer_id") or "")) else []


def _ahead(doc: Mapping[str, Any], resolution: tuple[int, datetime] | None) -> bool:
    """True when the ticket has not applied this resolution yet: its last applied assignment event is
    older, or is as old (BSON keeps milliseconds, and routing may resolve in the millisecond it did
    something else) without this resolution's time as the ticket's `resolved_at`."""
    if resolution is None:
        return False
    mark = doc.get("assignment_mark")
    if not mark:
        return True
    round_, when = resolution
    wanted = (round_, _ms(when))
    applied = (int(mark[0]), _ms(mark[1]))
    if applied != wanted:
        return applied < wanted
    resolved_at = doc.get("resolved_at")
    return resolved_at is None or _ms(resolved_at) != wanted[1]


def _as_resolved(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "status": "resolved"}


def _ms(at: datetime) -> datetime:
    """A time as BSON keeps it (milliseconds, UTC)."""
    at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def _resolutions(events: Iterable[CloudEvent]) -> dict[str, tuple[int, datetime]]:
    """The (round, time) of each resolution among the events, by ticket."""
    out: dict[str, tuple[int, datetime]] = {}
    for event in events:
        if event.type == RESOLVED:
            try:
                resolved = WorkOrderResolved.model_validate(event.data)
            except ValidationError as exc:
                raise PoisonEvent(f"{RESOLVED}: {exc}") from exc
            out[resolved.ticket_id] = max(
                out.get(resolved.ticket_id, (0, resolved.occurred_at)), (resolved.round, resolved.occurred_at)
            )
    return out


def _ticket_ids(events: Iterable[CloudEvent]) -> list[str]:
    return [event.ticket_id() for event in events if event.type in INDEXED_TYPES]
