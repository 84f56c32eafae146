"""Intake's MongoDB access for ticket attachments: the list of a ticket's attachments (`_id` = ticket id,
carrying its outbox) and the attachments' bytes (blobs, chunks `_id` = "<attachment id>:<n>"). Every
read and write is by `_id`: no index, no scan, on MongoDB and on FerretDB alike."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from datetime import UTC, datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from aftersales.intake.attachments import Attachment, TicketAttachments, attachment_of
from aftersales.shared.aggregate import Decision
from aftersales.shared.blobs import Blob, BlobStore
from aftersales.shared.contracts import Topic
from aftersales.shared.outbox import new_with_events, with_events
from aftersales.shared.runtime import ServiceRuntime

ATTACHMENTS = "ticket_attachments"  # `_id` = ticket id: its attachments' entries, version, outbox
ATTACHMENT_CHUNKS = "attachment_chunks"  # `_id` = "<attachment id>:<n>": the bytes


class AttachmentStore:
    def __init__(self, runtime: ServiceRuntime) -> None:
        self._runtime = runtime
        self.blobs = BlobStore(lambda: runtime.db, ATTACHMENT_CHUNKS)

    @property
    def _collection(self) -> Any:
        return self._runtime.db[ATTACHMENTS]

    async def load(self, ticket_id: str) -> TicketAttachments:
        doc = await self._collection.find_one({"_id": ticket_id}, {"outbox": 0})
        if doc is None:
            return TicketAttachments(ticket_id)
        items = tuple(attachment_of(ticket_id, entry) for entry in doc.get("items", []))
        return TicketAttachments(ticket_id, items, int(doc.get("version", 0)), exists=True)

    async def write(self, before: TicketAttachments, decision: Decision[TicketAttachments]) -> bool:
        """Write the decided list with its events, if it is still at the version `before` was read at;
        False when it changed meanwhile (decide again)."""
        after = decision.state
        events = list(decision.events)  # CloudEvents (see `attachment_service`)
        fields = {"items": [a.as_dict() for a in after.items], "updated_at": datetime.now(UTC)}
        if not before.exists:
            doc = {"_id": before.ticket_id, **fields, "version": 1}
            try:
                await self._collection.insert_one(new_with_events(doc, Topic.TICKETS, events))
            except DuplicateKeyError:
                return False
        else:
            update = with_events({"$set": fields, "$inc": {"version": 1}}, Topic.TICKETS, events)
            result = await self._collection.update_one(
                {"_id": before.ticket_id, "version": before.version}, update
            )
            if result.modified_count != 1:
                return False
        if events:
            self._runtime.relay.notify(ATTACHMENTS, before.ticket_id)
        return True

    async def erase(self, before: TicketAttachments) -> bool:
        """Empty the ticket's list (the outbox stays, for events not yet relayed), if it is still at the
        version read; False when it changed meanwhile."""
        update = {"$set": {"items": [], "erased_at": datetime.now(UTC)}, "$inc": {"version": 1}}
        result = await self._collection.update_one(
            {"_id": before.ticket_id, "version": before.version}, update
        )
        return bool(result.modified_count == 1)

    # ------------------------------------------------------------ bytes

    async def receive(
        self, attachment_id: str, body: AsyncIterable[bytes], *, content_type: str, max_bytes: int
    ) -> Blob:
        """Stream an upload's bytes in (hashed, counted, sniffed: see `BlobStore.write`)."""
        return await self.blobs.write(
            attachment_id, body, content_type=content_type, max_bytes=max_bytes, field="file"
        )

    def bytes_of(self, attachment: Attachment) -> AsyncIterator[bytes]:
        return self.blobs.chunks(_blob(attachment))

    async def delete_bytes(self, attachment: Attachment | Blob) -> int:
        blob = attachment if isinstance(attachment, Blob) else _blob(attachment)
        return await self.blobs.delete(blob)


def _blob(attachment: Attachment) -> Blob:
    return Blob(attachment.id, attachment.content_type, attachment.size, attachment.sha256)
