"""The service desk's use cases on tickets: notes and messages on a ticket's conversation and reading
it; a supervisor's corrections, merging a duplicate, closing and reopening by hand. Load, decide
(`desk`), version-guarded write (`store`) until it wins; an `expected_version` the ticket has left is a
409 naming `If-Match`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from aftersales.intake import desk, metrics
from aftersales.intake.desk import Author, Correction
from aftersales.intake.domain import Ticket, TicketDecision, TicketStatus
from aftersales.intake.service import MAX_WRITE_ATTEMPTS, MaySee
from aftersales.intake.store import TicketStore
from aftersales.shared.aggregate import decide_until_written
from aftersales.shared.errors import Conflict, InvalidRequest, NotFound

Decide = Callable[[Ticket], TicketDecision]


def _everyone(_: Ticket) -> bool:
    return True


class TicketDesk:
    """What staff do on a ticket by hand."""

    def __init__(self, store: TicketStore) -> None:
        self.store = store

    # ------------------------------------------------------------ the conversation

    async def note(self, ticket_id: str, *, may_see: MaySee, text: str, by: Author) -> TicketDecision:
        """Add an internal note to a ticket the caller works on or oversees."""
        now = datetime.now(UTC)
        return await self._change(
            ticket_id, lambda t: desk.noted(t, text=text, by=by, now=now), may_see=may_see
        )

    async def message(self, ticket_id: str, *, may_see: MaySee, text: str, by: Author) -> TicketDecision:
        """Post a message to the ticket's customer (`ticket.message-posted`, id only)."""
        now = datetime.now(UTC)
        return await self._change(
            ticket_id, lambda t: desk.message_posted(t, text=text, by=by, now=now), may_see=may_see
        )

    async def conversation(
        self, ticket_id: str, *, may_see: MaySee, channel: bool, start: int, limit: int
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Return a page of the ticket's conversation (a channel never sees internal notes)."""
        ticket = await self._visible(ticket_id, may_see)

        def shown(entry: Mapping[str, Any]) -> bool:
            return not channel or desk.shown_to_channel(dict(entry))

        return await self.store.conversation(ticket, start=start, limit=limit, shown=shown)

    # ------------------------------------------------------------ by hand

    async def correct(
        self, ticket_id: str, fix: Correction, *, by: str, expected_version: int | None
    ) -> TicketDecision:
        now = datetime.now(UTC)
        return await self._change(
            ticket_id,
            lambda t: desk.corrected(t, fix, by=by, today=now.date(), now=now),
            expected_version=expected_version,
        )

    async def close(
        self, ticket_id: str, *, by: str, reason: str, expected_version: int | None
    ) -> TicketDecision:
        now = datetime.now(UTC)
        decision = await self._change(
            ticket_id,
            lambda t: desk.closed_by_agent(t, by=by, reason=reason, now=now),
            expected_version=expected_version,
        )
        _count(decision, closed=desk.CLOSED_BY_AGENT)
        return decision

    async def reopen(
        self, ticket_id: str, *, by: str, reason: str, expected_version: int | None
    ) -> TicketDecision:
        now = datetime.now(UTC)
        decision = await self._change(
            ticket_id,
            lambda t: desk.reopened_by_agent(t, by=by, reason=reason, now=now),
            expected_version=expected_version,
        )
        if decision.moved_to is TicketStatus.REOPENED:
            metrics.TICKETS_REOPENED.inc()
        _count(decision)
        return decision

    async def merge(
        self, duplicate_id: str, original_id: str, *, by: str, reason: str, expected_version: int | None
    ) -> TicketDecision:
        """Close a duplicate as merged into its original, then note it on the original's timeline (once:
        a merge repeated after a crash between the two writes completes the second)."""
        original = await self.store.load(original_id)
        if original is None:
            raise InvalidRequest(f"there is no ticket {original_id}", field="original_ticket_id")
        now = datetime.now(UTC)
        decision = await self._change(
            duplicate_id,
            lambda t: desk.merged_into(t, original, by=by, reason=reason, now=now),
            expected_version=expected_version,
        )
        await self._change(
            original_id,
            lambda t: desk.duplicate_noted(t, duplicate_id=duplicate_id, now=now),
            applying=f"merge:{duplicate_id}",
        )
        _count(decision, closed=desk.MERGED)
        return decision

    # ------------------------------------------------------------ load, decide, write

    async def _change(
        self,
        ticket_id: str,
        decide: Decide,
        *,
        may_see: MaySee = _everyone,
        expected_version: int | None = None,
        applying: str | None = None,
    ) -> TicketDecision:
        async def load() -> Ticket:
            ticket = await self._visible(ticket_id, may_see, applying=applying)
            if expected_version is not None and ticket.version != expected_version:
                raise Conflict(
                    f"ticket {ticket_id} is at version {ticket.version}, not {expected_version}: "
                    "read it again",
                    field="If-Match",
                )
            return ticket

        decision = await decide_until_written(
            load, decide, self.store.write, attempts=MAX_WRITE_ATTEMPTS, what=f"ticket {ticket_id}"
        )
        assert isinstance(decision, TicketDecision)  # what `decide` returned
        return decision

    async def _visible(self, ticket_id: str, may_see: MaySee, *, applying: str | None = None) -> Ticket:
        ticket = await self.store.load(ticket_id, applying=applying)
        if ticket is None or not may_see(ticket):
            raise NotFound(f"ticket {ticket_id} not found")
        return ticket


def _count(decision: TicketDecision, *, closed: str | None = None) -> None:
    if decision.moved_to is None:
        return
    metrics.STATUS_CHANGES.labels(decision.moved_to.value).inc()
    if closed is not None and decision.moved_to is TicketStatus.CLOSED:
        metrics.TICKETS_CLOSED.labels(closed).inc()
