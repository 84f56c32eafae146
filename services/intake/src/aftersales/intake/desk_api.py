"""The service desk's HTTP routes on tickets: internal notes and messages to the customer, the
conversation, and a supervisor's corrections, merge, close and reopen by hand (version-guarded:
`If-Match` or `expected_version`, 409 naming `If-Match` when the ticket moved on)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from aftersales.intake.api import Service, TicketId, read_for, visible_to
from aftersales.intake.desk import Author, Correction
from aftersales.intake.desk_schemas import (
    MAX_PAGE,
    ByHandIn,
    ConversationEntry,
    ConversationPage,
    CorrectionIn,
    MergeIn,
    NoteIn,
    entry_of,
)
from aftersales.intake.desk_service import TicketDesk
from aftersales.intake.schemas import TicketRead
from aftersales.intake.views import expected_version
from aftersales.shared.auth import Principal
from aftersales.shared.errors import InvalidRequest, NotFound
from aftersales.shared.roles import AnyCaller, Staff, Supervisor, service_of

Desk = Annotated[TicketDesk, service_of("desk", TicketDesk)]
IfMatch = Annotated[str | None, Header(max_length=40, description="the ticket's `version` (its ETag)")]

router = APIRouter(prefix="/v1/tickets", tags=["tickets", "desk"])


@router.post(
    "/{ticket_id}/notes",
    status_code=status.HTTP_201_CREATED,
    summary="Add an internal note (staff: supervisors, the ticket's technician); never shown to a channel",
)
async def add_note(ticket_id: TicketId, body: NoteIn, principal: Staff, tickets: Desk) -> ConversationEntry:
    decision = await tickets.note(
        ticket_id, may_see=visible_to(principal), text=body.text, by=_author(principal)
    )
    return entry_of(dict(decision.state.appended.conversation[-1]))


@router.post(
    "/{ticket_id}/messages",
    status_code=status.HTTP_201_CREATED,
    summary="Post a message to the customer (seen by the ticket's channel); emits `ticket.message-posted` "
    "with the message id only",
)
async def post_message(
    ticket_id: TicketId, body: NoteIn, principal: Staff, tickets: Desk
) -> ConversationEntry:
    decision = await tickets.message(
        ticket_id, may_see=visible_to(principal), text=body.text, by=_author(principal)
    )
    return entry_of(dict(decision.state.appended.conversation[-1]))


@router.get(
    "/{ticket_id}/conversation",
    summary="The ticket's conversation, oldest first: a channel sees staff messages and the customer's "
    "replies, staff also internal notes; cursor pagination",
)
async def get_conversation(
    ticket_id: TicketId,
    principal: AnyCaller,
    tickets: Desk,
    cursor: Annotated[str | None, Query(max_length=12)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> ConversationPage:
    start = _position(cursor)
    entries, after = await tickets.conversation(
        ticket_id, may_see=visible_to(principal), channel=principal.is_channel_only, start=start, limit=limit
    )
    return ConversationPage(
        items=[entry_of(e) for e in entries], next_cursor=str(after) if after is not None else None
    )


@router.patch(
    "/{ticket_id}",
    summary="Correct a ticket's category, priority or product (supervisors); a priority change re-plans "
    "routing's SLA clocks",
)
async def correct_ticket(
    ticket_id: TicketId,
    body: CorrectionIn,
    principal: Supervisor,
    tickets: Desk,
    intake: Service,
    response: Response,
    if_match: IfMatch = None,
) -> TicketRead:
    fix = Correction(reason=body.reason, category=body.category, priority=body.priority, product=body.product)
    version = expected_version(if_match, body.expected_version)
    await tickets.correct(ticket_id, fix, by=principal.subject, expected_version=version)
    return await _read(intake, ticket_id, principal, response)


@router.post(
    "/{ticket_id}/merge",
    summary="Merge a duplicate into its original (supervisors): the duplicate is closed as merged, its "
    "open work cancelled, the original's timeline notes it",
)
async def merge_ticket(
    ticket_id: TicketId,
    body: MergeIn,
    principal: Supervisor,
    tickets: Desk,
    intake: Service,
    response: Response,
    if_match: IfMatch = None,
) -> TicketRead:
    await tickets.merge(
        ticket_id,
        body.original_ticket_id,
        by=principal.subject,
        reason=body.reason,
        expected_version=expected_version(if_match, body.expected_version),
    )
    return await _read(intake, ticket_id, principal, response)


@router.post("/{ticket_id}/close", summary="Close a ticket by hand with a reason (supervisors)")
async def close_ticket(
    ticket_id: TicketId,
    body: ByHandIn,
    principal: Supervisor,
    tickets: Desk,
    intake: Service,
    response: Response,
    if_match: IfMatch = None,
) -> TicketRead:
    version = expected_version(if_match, body.expected_version)
    await tickets.close(ticket_id, by=principal.subject, reason=body.reason, expected_version=version)
    return await _read(intake, ticket_id, principal, response)


@router.post(
    "/{ticket_id}/reopen",
    summary="Reopen a resolved or closed ticket by hand with a reason (supervisors); routing dispatches "
    "a new round",
)
async def reopen_ticket(
    ticket_id: TicketId,
    body: ByHandIn,
    principal: Supervisor,
    tickets: Desk,
    intake: Service,
    response: Response,
    if_match: IfMatch = None,
) -> TicketRead:
    version = expected_version(if_match, body.expected_version)
    await tickets.reopen(ticket_id, by=principal.subject, reason=body.reason, expected_version=version)
    return await _read(intake, ticket_id, principal, response)


def _author(principal: Principal) -> Author:
    return Author(principal.subject, "supervisor" if principal.is_staff else "technician")


def _position(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not (cursor.isascii() and cursor.isdigit()):
        raise InvalidRequest("cursor is not one this API returned", field="cursor")
    return int(cursor)


async def _read(intake: Service, ticket_id: str, principal: Principal, response: Response) -> TicketRead:
    doc = await intake.store.get(ticket_id)
    if doc is None:
        raise NotFound(f"ticket {ticket_id} not found")
    response.headers["ETag"] = f'"{doc.get("version", 0)}"'
    return read_for(principal, doc)
