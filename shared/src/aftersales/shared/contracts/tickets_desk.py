"""The service desk's own changes to tickets on `aftersales.tickets.v1` (intake): a staff message to the
customer, a duplicate merged into its original and a file attached.

Ids and times only. A message's text stays in intake's database (it is written by staff but may quote the
customer's contact data): a consumer that wants to send it reads it from intake's API by its id.
Corrections, closing and reopening by hand reuse `ticket.updated`, `ticket.closed` (`closed_by_agent`)
and `ticket.reopened`; a merged duplicate's work is ended by `ticket.cancelled`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from aftersales.shared.contracts.common import EventData
from aftersales.shared.contracts.registry import event
from aftersales.shared.contracts.topics import Topic


@event("aftersales.ticket.message-posted.v1", Topic.TICKETS)
class TicketMessagePosted(EventData):
    """Staff posted a message to the customer on the ticket's conversation (the text is not in the event)."""

    ticket_id: str
    message_id: str = Field(description="the entry's id in `GET /v1/tickets/{id}/conversation`")
    author_role: Literal["supervisor", "technician"]
    posted_at: AwareDatetime


@event("aftersales.ticket.duplicate-merged.v1", Topic.TICKETS)
class TicketDuplicateMerged(EventData):
    """A supervisor merged a duplicate ticket into its original: the duplicate is closed (`merged`) and its
    open work is cancelled with a `ticket.cancelled` of the duplicate, published just before this one."""

    ticket_id: str = Field(description="the duplicate")
    original_ticket_id: str
    merged_by: str
    merged_at: AwareDatetime


@event("aftersales.ticket.attachment-added.v1", Topic.TICKETS)
class TicketAttachmentAdded(EventData):
    """A photo, invoice (warranty proof) or document was attached to the ticket. Its bytes and its file
    name stay in intake (the name may carry personal data): a consumer reads them from
    `GET /v1/tickets/{id}/attachments/{attachment_id}` with a token that may see them."""

    ticket_id: str
    attachment_id: str
    kind: Literal["photo", "invoice", "document"] = Field(description="an invoice is warranty proof")
    content_type: Literal["image/jpeg", "image/png", "image/webp", "application/pdf"]
    size_bytes: int = Field(ge=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the bytes, hex")
    visibility: Literal["customer", "internal"] = Field(
        description="`internal`: staff only; `customer`: staff and the ticket's channel"
    )
    added_by: str = Field(description="the token subject that uploaded it")
    added_at: AwareDatetime
