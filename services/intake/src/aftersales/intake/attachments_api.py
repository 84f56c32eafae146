"""HTTP routes of ticket attachments: upload a photo, invoice or document as the raw request body
(streamed, never read whole), list a ticket's attachments, download one (streamed). Who sees which
ticket is `api.visible_to`; which attachment, `attachments.may_see`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from aftersales.intake.api import TicketId, visible_to
from aftersales.intake.attachment_service import TicketFiles, Upload
from aftersales.intake.attachments import MAX_FILENAME_CHARS, TYPES, Attachment, Kind, Visibility
from aftersales.shared.roles import AnyCaller, service_of

Files = Annotated[TicketFiles, service_of("attachments", TicketFiles)]
AttachmentId = Annotated[str, Path(max_length=40, pattern=r"^A-[0-9a-f]{20}$")]
UPLOAD_PATH = "/v1/tickets/{ticket_id}/attachments"

router = APIRouter(prefix="/v1/tickets", tags=["tickets", "attachments"])


class AttachmentRead(BaseModel):
    id: str
    ticket_id: str
    kind: Kind
    content_type: str
    size: int = Field(description="bytes")
    sha256: str = Field(description="SHA-256 of the bytes, hex")
    visibility: Visibility
    filename: str | None
    added_by: str
    added_at: datetime


class AttachmentList(BaseModel):
    items: list[AttachmentRead]
    count: int


def _read(a: Attachment) -> AttachmentRead:
    return AttachmentRead(
        id=a.id,
        ticket_id=a.ticket_id,
        kind=a.kind,
        content_type=a.content_type,
        size=a.size,
        sha256=a.sha256,
        visibility=a.visibility,
        filename=a.filename,
        added_by=a.added_by,
        added_at=a.added_at,
    )


_BODY = {
    "requestBody": {
        "required": True,
        "description": "the file's bytes; Content-Type is its type (photo: JPEG, PNG, WebP; invoice: PDF, "
        "JPEG, PNG; document: PDF), checked against the bytes' first ones",
        "content": {
            t: {"schema": {"type": "string", "format": "binary"}}
            for t in sorted(set().union(*TYPES.values()))
        },
    }
}


@router.post(
    "/{ticket_id}/attachments",
    status_code=status.HTTP_201_CREATED,
    summary="Attach a photo, invoice (warranty proof) or document, streamed as the raw body; emits "
    "`ticket.attachment-added` (no file name)",
    openapi_extra=_BODY,
    responses={403: {}, 404: {}, 409: {}, 413: {}, 415: {}, 422: {}},
)
async def upload_attachment(
    ticket_id: TicketId,
    request: Request,
    principal: AnyCaller,
    files: Files,
    kind: Kind,
    visibility: Annotated[
        Visibility | None,
        Query(
            description="`internal`: staff only; `customer`: also the ticket's channel. Default: a "
            "channel's uploads are `customer`, staff's `internal`"
        ),
    ] = None,
    filename: Annotated[str | None, Query(max_length=MAX_FILENAME_CHARS)] = None,
) -> AttachmentRead:
    declared = request.headers.get("content-length", "")
    upload = Upload(
        kind=kind,
        visibility=visibility,
        filename=filename,
        content_type=request.headers.get("content-type", ""),
        declared_size=int(declared) if declared.isdigit() else None,
    )
    attachment = await files.attach(
        ticket_id, upload, request.stream(), caller=principal, may_see=visible_to(principal)
    )
    return _read(attachment)


@router.get(
    "/{ticket_id}/attachments",
    summary="A ticket's attachments, oldest first (a channel sees the customer-visible ones)",
)
async def list_attachments(ticket_id: TicketId, principal: AnyCaller, files: Files) -> AttachmentList:
    items = [_read(a) for a in await files.list(ticket_id, caller=principal, may_see=visible_to(principal))]
    return AttachmentList(items=items, count=len(items))


@router.get(
    "/{ticket_id}/attachments/{attachment_id}",
    response_class=StreamingResponse,
    summary="An attachment's bytes, as uploaded (streamed)",
    responses={200: {"content": {t: {} for t in sorted(set().union(*TYPES.values()))}}, 404: {}},
)
async def download_attachment(
    ticket_id: TicketId, attachment_id: AttachmentId, principal: AnyCaller, files: Files
) -> StreamingResponse:
    found, chunks = await files.open(
        ticket_id, attachment_id, caller=principal, may_see=visible_to(principal)
    )
    return StreamingResponse(
        chunks,
        media_type=found.content_type,
        headers={
            "Content-Length": str(found.size),
            "Content-Disposition": _disposition(found),
            "ETag": f'"{found.sha256}"',
            "X-Content-Type-Options": "nosniff",
        },
    )


def _disposition(a: Attachment) -> str:
    """Always a download (never shown inline by a browser), named as uploaded (RFC 6266)."""
    name = a.filename or f"{a.id}{_EXTENSIONS.get(a.content_type, '')}"
    fallback = name.encode("ascii", "replace").decode().replace("?", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


_EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "application/pdf": ".pdf"}
