"""Files attached to a ticket (附件): photos of the fault, invoices (warranty proof, 发票) and documents.
Which kinds take which types, who sees which attachment, and the decision to attach one. Pure, no I/O.

A ticket's attachments are one aggregate beside the ticket (`<ticket id>` in `ticket_attachments`, at
most `attachments_per_ticket` entries): adding one writes its entry and its `ticket.attachment-added`
event in one document write. The bytes are blobs (`aftersales.shared.blobs`), keyed by the attachment id.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from aftersales.shared.aggregate import Decision
from aftersales.shared.auth import Principal
from aftersales.shared.contracts.tickets_desk import TicketAttachmentAdded
from aftersales.shared.errors import Conflict

MAX_FILENAME_CHARS = 200


class Kind(StrEnum):
    PHOTO = "photo"
    INVOICE = "invoice"  # warranty proof (保修凭证)
    DOCUMENT = "document"


class Visibility(StrEnum):
    CUSTOMER = "customer"  # staff and the ticket's channel
    INTERNAL = "internal"  # staff only


JPEG, PNG, WEBP, PDF = "image/jpeg", "image/png", "image/webp", "application/pdf"
TYPES: dict[Kind, tuple[str, ...]] = {
    Kind.PHOTO: (JPEG, PNG, WEBP),
    Kind.INVOICE: (PDF, JPEG, PNG),
    Kind.DOCUMENT: (PDF,),
}


@dataclass(frozen=True, slots=True)
class Attachment:
    id: str
    ticket_id: str
    kind: Kind
    content_type: str
    size: int
    sha256: str
    visibility: Visibility
    filename: str | None  # as the uploader named it: may be personal data, never in an event
    added_by: str
    added_at: datetime

    def as_dict(self) -> dict[str, Any]:
        """The entry as stored."""
        return {
            "id": self.id,
            "kind": self.kind.value,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
            "visibility": self.visibility.value,
            "filename": self.filename,
            "added_by": self.added_by,
            "added_at": self.added_at,
        }


@dataclass(frozen=True, slots=True)
class TicketAttachments:
    """A ticket's attachments, oldest first."""

    ticket_id: str
    items: tuple[Attachment, ...] = ()
    version: int = 0
    exists: bool = False  # False until the first attachment is written

    def get(self, attachment_id: str) -> Attachment | None:
        return next((a for a in self.items if a.id == attachment_id), None)


def attachment_of(ticket_id: str, entry: dict[str, Any]) -> Attachment:
    """Return an attachment from its stored entry."""
    return Attachment(
        id=entry["id"],
        ticket_id=ticket_id,
        kind=Kind(entry["kind"]),
        content_type=entry["content_type"],
        size=int(entry["size"]),
        sha256=entry["sha256"],
        visibility=Visibility(entry["visibility"]),
        filename=entry.get("filename"),
        added_by=entry["added_by"],
        added_at=entry["added_at"],
    )


def attach(current: TicketAttachments, attachment: Attachment, *, limit: int) -> Decision[TicketAttachments]:
    """Return the ticket's attachments with one more and its `ticket.attachment-added` event; unchanged
    when it is there already; 409 when the ticket has `limit` attachments."""
    if current.get(attachment.id) is not None:
        return Decision(current)
    check_room(current, limit=limit)
    event = TicketAttachmentAdded(
        ticket_id=current.ticket_id,
        attachment_id=attachment.id,
        kind=attachment.kind.value,
        content_type=attachment.content_type,  # type: ignore[arg-type]  # one of TYPES, validated
        size_bytes=attachment.size,
        sha256=attachment.sha256,
        visibility=attachment.visibility.value,
        added_by=attachment.added_by,
        added_at=attachment.added_at,
    )
    return Decision(replace(current, items=(*current.items, attachment)), (event,))


def check_room(current: TicketAttachments, *, limit: int) -> None:
    """409 naming `attachments` when the ticket has `limit` attachments already."""
    if len(current.items) >= limit:
        raise Conflict(
            f"ticket {current.ticket_id} has {limit} attachments, the most it may have", field="attachments"
        )


def may_see(principal: Principal, attachment: Attachment) -> bool:
    """Whether a caller who may see the ticket sees this attachment: a channel only customer-visible
    ones, staff (supervisors, the ticket's technician) all."""
    return not principal.is_channel_only or attachment.visibility is Visibility.CUSTOMER


def default_visibility(principal: Principal) -> Visibility:
    """What an upload is when it does not say: a channel's is the customer's, staff's is internal."""
    return Visibility.CUSTOMER if principal.is_channel_only else Visibility.INTERNAL


_UNSAFE = re.compile(r'[\x00-\x1f\x7f"\\/]')


def clean_filename(name: str | None) -> str | None:
    """Return a file name fit to show and to send back in Content-Disposition: its last path part,
    without control characters, quotes or slashes, NFC, at most `MAX_FILENAME_CHARS`; None when empty."""
    if name is None:
        return None
    last = re.split(r"[/\\]", name)[-1]
    cleaned = _UNSAFE.sub("", unicodedata.normalize("NFC", last)).strip()[:MAX_FILENAME_CHARS]
    return cleaned or None


def timeline_entry(event: TicketAttachmentAdded, event_id: str) -> dict[str, Any]:
    """Return the ticket's timeline entry of an attachment (ids, kind and size: never the file name)."""
    return {
        "at": event.added_at,
        "type": "ticket.attachment_added",
        "source": "intake",
        "event_id": event_id,
        "attachment_id": event.attachment_id,
        "kind": event.kind,
        "content_type": event.content_type,
        "size_bytes": event.size_bytes,
        "visibility": event.visibility,
        "by": event.added_by,
    }
