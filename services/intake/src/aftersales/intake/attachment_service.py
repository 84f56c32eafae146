"""The use cases of ticket attachments: attach a file streamed in, list a ticket's attachments, read one
back as a stream, and erase a ticket's attachments (PIPL). Every call is authorized on the ticket first
(a caller who may not see it gets 404), then per attachment (a channel sees only customer-visible ones).

Attaching is three steps, each safe to repeat or to lose: the bytes stream into chunks under a new
attachment id; the entry and its `ticket.attachment-added` event are one write of the ticket's
attachment list (the commit point: bytes without an entry are deleted when the entry is refused); then
the event goes on the ticket's timeline, applied once by its event id like another service's event.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from aftersales.intake import attachments as rules
from aftersales.intake import messages
from aftersales.intake.attachments import Attachment, Kind, TicketAttachments, Visibility
from aftersales.intake.attachments_store import AttachmentStore
from aftersales.intake.domain import Ticket, TicketDecision
from aftersales.intake.service import MAX_WRITE_ATTEMPTS, MaySee
from aftersales.intake.store import TicketStore
from aftersales.intake.timeline import Downstream, apply_downstream
from aftersales.shared.aggregate import Decision, decide_until_written
from aftersales.shared.auth import Principal
from aftersales.shared.blobs import PayloadTooLarge, declared_type
from aftersales.shared.contracts.tickets_desk import TicketAttachmentAdded
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.errors import Forbidden, NotFound

ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Upload:
    """What an upload says of itself: its kind, who may see it (None: the caller's default), the file's
    name, its declared Content-Type and Content-Length."""

    kind: Kind
    visibility: Visibility | None
    filename: str | None
    content_type: str
    declared_size: int | None = None


class TicketFiles:
    """Photos, invoices and documents attached to tickets."""

    def __init__(
        self, store: AttachmentStore, tickets: TicketStore, *, max_bytes: int, per_ticket: int
    ) -> None:
        self.store = store
        self.tickets = tickets
        self.max_bytes = max_bytes
        self.per_ticket = per_ticket

    async def attach(
        self,
        ticket_id: str,
        upload: Upload,
        body: AsyncIterable[bytes],
        *,
        caller: Principal,
        may_see: MaySee,
    ) -> Attachment:
        """Stream a file onto a ticket the caller may see and return its entry. 403 for a channel's
        internal upload, 415 for a type its kind does not take (or bytes that are not it), 413 past the
        size limit, 409 when the ticket has its most attachments."""
        await self._ticket(ticket_id, may_see)
        visibility = upload.visibility or rules.default_visibility(caller)
        if caller.is_channel_only and visibility is Visibility.INTERNAL:
            raise Forbidden(
                "a channel attaches files its customer sees, not internal ones", field="visibility"
            )
        media = declared_type(
            upload.content_type, rules.TYPES[upload.kind], what=f"a {upload.kind.value}", field="Content-Type"
        )
        if upload.declared_size is not None and upload.declared_size > self.max_bytes:
            raise PayloadTooLarge(f"file: larger than {self.max_bytes} bytes", field="file")
        rules.check_room(await self.store.load(ticket_id), limit=self.per_ticket)  # 409 before any byte
        attachment_id = f"A-{uuid.uuid4().hex[:20]}"
        blob = await self.store.receive(attachment_id, body, content_type=media, max_bytes=self.max_bytes)
        attachment = Attachment(
            id=attachment_id,
            ticket_id=ticket_id,
            kind=upload.kind,
            content_type=media,
            size=blob.size,
            sha256=blob.sha256,
            visibility=visibility,
            filename=rules.clean_filename(upload.filename),
            added_by=caller.subject,
            added_at=_to_ms(datetime.now(UTC)),
        )
        try:
            decision = await decide_until_written(
                lambda: self.store.load(ticket_id),
                lambda current: _enveloped(rules.attach(current, attachment, limit=self.per_ticket)),
                self.store.write,
                attempts=ATTEMPTS,
                what=f"ticket {ticket_id}'s attachments",
            )
        except BaseException:
            await self.store.delete_bytes(blob)  # refused (full meanwhile) or failed: no entry names them
            raise
        for event in decision.events:
            await self._on_timeline(ticket_id, event)
        return attachment

    async def list(self, ticket_id: str, *, caller: Principal, may_see: MaySee) -> list[Attachment]:
        """Return the attachments of a ticket the caller may see, those the caller sees, oldest first."""
        await self._ticket(ticket_id, may_see)
        return [a for a in (await self.store.load(ticket_id)).items if rules.may_see(caller, a)]

    async def open(
        self, ticket_id: str, attachment_id: str, *, caller: Principal, may_see: MaySee
    ) -> tuple[Attachment, AsyncIterator[bytes]]:
        """Return an attachment the caller sees and its bytes as a stream; 404 otherwise."""
        await self._ticket(ticket_id, may_see)
        found = (await self.store.load(ticket_id)).get(attachment_id)
        if found is None or not rules.may_see(caller, found):
            raise NotFound(f"ticket {ticket_id} has no attachment {attachment_id}", field="attachment_id")
        return found, self.store.bytes_of(found)

    async def erase(self, ticket_id: str) -> int:
        """Delete a ticket's attachments, bytes first, then their entries (PIPL erasure: photos and
        invoices are personal data); return how many were deleted. Repeating it finds nothing."""
        erased = 0
        for _ in range(ATTEMPTS):
            current = await self.store.load(ticket_id)
            if not current.items:
                return erased
            for attachment in current.items:
                await self.store.delete_bytes(attachment)
            if await self.store.erase(current):
                return erased + len(current.items)
        return erased

    async def _ticket(self, ticket_id: str, may_see: MaySee) -> Ticket:
        ticket = await self.tickets.load(ticket_id)
        if ticket is None or not may_see(ticket):
            raise NotFound(f"ticket {ticket_id} not found")
        return ticket

    async def _on_timeline(self, ticket_id: str, envelope: CloudEvent) -> None:
        """Put an attachment's event on the ticket's timeline, once (by its event id)."""
        event = envelope.model()
        assert isinstance(event, TicketAttachmentAdded)  # what `rules.attach` decides
        envelope_id = envelope.id
        entry = rules.timeline_entry(event, envelope_id)
        downstream = Downstream(
            event_id=envelope_id, kind=entry["type"], data={}, at=event.added_at, entry=entry
        )

        async def load() -> Ticket:
            ticket = await self.tickets.load(ticket_id, applying=envelope_id)
            if ticket is None:
                raise NotFound(f"ticket {ticket_id} not found")
            return ticket

        def decide(ticket: Ticket) -> TicketDecision:
            return apply_downstream(ticket, downstream, now=datetime.now(UTC))

        await decide_until_written(
            load, decide, self.tickets.write, attempts=MAX_WRITE_ATTEMPTS, what=f"ticket {ticket_id}"
        )


def _to_ms(at: datetime) -> datetime:
    """The time as MongoDB keeps it (to the millisecond): what the upload answers is what a list shows."""
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def _enveloped(decision: Decision[TicketAttachments]) -> Decision[TicketAttachments]:
    """The decision with its events in their envelopes: the timeline names the event id Kafka carries."""
    ticket_id = decision.state.ticket_id
    return replace(decision, events=tuple(messages.envelope(m, ticket_id) for m in decision.events))
