"""Intake's HTTP routes: submit, read, list and act on tickets; read a customer's profile and history.

Who may call a route is its role alias (`aftersales.shared.roles`); which tickets and customers a caller
sees is decided here, per object: a channel token sees only what it created, a technician only the
tickets it works (or last worked) on and their customers, staff everything."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Response, status

from aftersales.intake import customers as customer_records
from aftersales.intake import metrics, privacy, views
from aftersales.intake.customer_book import CustomerBook, Profile
from aftersales.intake.domain import Ticket, TicketStatus
from aftersales.intake.schemas import (
    CancelIn,
    CustomerRead,
    CustomerReplyIn,
    CustomerTierIn,
    TicketPage,
    TicketRead,
    TicketReceipt,
    read_of,
    summary_of,
)
from aftersales.intake.service import Intake, MaySee, TicketProgress
from aftersales.intake.views import TicketFilter
from aftersales.shared.auth import Principal
from aftersales.shared.contracts.common import Category, Channel
from aftersales.shared.contracts.requests import TicketRequest
from aftersales.shared.errors import Forbidden, InvalidRequest, NotFound
from aftersales.shared.roles import AnyCaller, ChannelOrSupervisor, Supervisor, service_of
from aftersales.shared.settings import Scope

Service = Annotated[Intake, service_of("intake", Intake)]
Book = Annotated[CustomerBook, service_of("customer_book", CustomerBook)]
Progress = Annotated[TicketProgress, service_of("progress", TicketProgress)]
TicketId = Annotated[str, Path(max_length=100)]
CustomerId = Annotated[str, Path(max_length=100)]

tickets = APIRouter(prefix="/v1/tickets", tags=["tickets"])
customers = APIRouter(prefix="/v1/customers", tags=["tickets", "customers"])


@tickets.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Submit a customer request; 201 when a ticket was opened, 200 for a replay or a storm merge",
    responses={200: {"model": TicketReceipt}, 403: {}, 409: {}, 413: {}, 422: {}},
)
async def submit_ticket(
    body: TicketRequest,
    principal: ChannelOrSupervisor,
    intake: Service,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> TicketReceipt:
    if principal.channel and body.channel.value != principal.channel and Scope.ADMIN not in principal.scopes:
        metrics.REQUESTS_REJECTED.labels("http", "channel_mismatch").inc()
        raise Forbidden(
            f"this token speaks for channel {principal.channel!r} and cannot submit "
            f"channel {body.channel.value!r} requests",
            field="channel",
        )
    if idempotency_key is not None and not idempotency_key.strip():
        raise InvalidRequest("Idempotency-Key must not be blank", field="Idempotency-Key")
    submitted = await intake.submit(
        body,
        caller=f"http:{principal.subject}",
        idempotency_key=idempotency_key,
        source="http",
        staff=principal.is_staff,
    )
    if submitted.outcome != "created":
        response.status_code = status.HTTP_200_OK
    if submitted.outcome == "replayed":
        response.headers["Idempotent-Replayed"] = "true"
    ticket = submitted.ticket
    return TicketReceipt(
        id=ticket.id,
        status=ticket.status,
        category=ticket.category,
        priority=ticket.priority,
        customer_id=ticket.customer_id,
        rules_version=ticket.rules_version,
        outcome=submitted.outcome,
        alert_count=ticket.alert_count,
    )


@tickets.get(
    "/{ticket_id}",
    summary="A ticket with its status and timeline",
    description="The timeline holds the ticket's last 500 entries, oldest first; older ones are dropped.",
)
async def get_ticket(ticket_id: TicketId, principal: AnyCaller, intake: Service) -> TicketRead:
    doc = await intake.store.get(ticket_id)
    if doc is None or not _sees(
        principal, doc.get("created_by"), doc.get("technician_id"), doc.get("last_technician_id")
    ):
        raise NotFound(f"ticket {ticket_id} not found")
    return read_for(principal, doc)


@tickets.get("", summary="Tickets, newest first, filtered; cursor pagination")
async def list_tickets(
    principal: AnyCaller,
    intake: Service,
    status_: Annotated[TicketStatus | None, Query(alias="status")] = None,
    customer_id: Annotated[str | None, Query(max_length=100)] = None,
    channel: Channel | None = None,
    category: Category | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int, Query(ge=1, le=views.MAX_PAGE)] = 50,
) -> TicketPage:
    which = _own(
        principal,
        TicketFilter(
            status=status_,
            customer_id=customer_id,
            channel=channel,
            category=category,
            created_from=_utc("created_from", created_from) if created_from is not None else None,
            created_to=_utc("created_to", created_to) if created_to is not None else None,
        ),
    )
    after = views.decode_cursor(cursor) if cursor else None
    docs = await intake.store.list(which, after=after, limit=limit + 1)
    page, more = docs[:limit], len(docs) > limit
    next_cursor = views.encode_cursor(page[-1]["created_at"], page[-1]["_id"]) if more and page else None
    view = views.channel_view if principal.is_channel_only else dict
    return TicketPage(items=[summary_of(view(d)) for d in page], next_cursor=next_cursor)


@tickets.post("/{ticket_id}/cancel", summary="Cancel a ticket that is not resolved yet")
async def cancel_ticket(
    ticket_id: TicketId, principal: ChannelOrSupervisor, progress: Progress, body: CancelIn | None = None
) -> TicketRead:
    reason = (body or CancelIn()).reason
    await progress.cancel(ticket_id, may_see=visible_to(principal), reason=reason)
    return await _read(progress, ticket_id, principal)


@tickets.post(
    "/{ticket_id}/customer-reply",
    summary="The customer answered: a ticket waiting on the customer goes back to work",
)
async def customer_reply(
    ticket_id: TicketId,
    principal: ChannelOrSupervisor,
    progress: Progress,
    body: CustomerReplyIn | None = None,
) -> TicketRead:
    message = body.message if body else None
    await progress.customer_replied(ticket_id, may_see=visible_to(principal), message=message)
    return await _read(progress, ticket_id, principal)


@customers.get(
    "/{customer_id}",
    summary="A customer's profile and history",
    dependencies=[Depends(privacy.customer_read)],  # reads of contact data go in the access log
)
async def get_customer(customer_id: CustomerId, principal: AnyCaller, intake: Service) -> CustomerRead:
    """Staff see every customer; a technician the customers of its tickets; a channel the customers
    it has served, with contact data masked and only the tickets it created."""
    profile = await intake.store.customer(customer_id)
    if profile is None or not await may_see_customer(intake, principal, profile):
        raise NotFound(f"customer {customer_id} not found")
    found = await intake.store.list(
        _own(principal, TicketFilter(customer_id=customer_id)), after=None, limit=50
    )
    view = views.channel_view if principal.is_channel_only else dict
    shown = customer_records.contact_view(profile) if principal.is_channel_only else profile
    return CustomerRead.model_validate(
        {
            **shown,
            "id": profile["_id"],
            "products": await intake.store.customer_products(profile),
            "ticket_count": await intake.store.customer_ticket_count(customer_id)
            if principal.is_staff
            else len(found),
            "tickets": [summary_of(view(t)) for t in found],
        }
    )


@customers.put(
    "/{customer_id}/tier",
    summary="Set a customer's tier (supervisors): the platform's record that tickets are judged by",
)
async def set_customer_tier(
    customer_id: CustomerId, body: CustomerTierIn, principal: Supervisor, intake: Service, book: Book
) -> CustomerRead:
    await book.edit(customer_id, Profile({}, tier=body.tier), by=principal.subject, expected_version=None)
    return await get_customer(customer_id, principal, intake)


def _sees(principal: Principal, created_by: Any, technician_id: Any, last_technician_id: Any) -> bool:
    """May this caller see a ticket? A channel token sees only what it created, a technician only the
    tickets it works (or last worked) on."""
    if principal.is_channel_only:
        return bool(created_by == f"http:{principal.subject}")
    if principal.is_technician_only:
        return principal.subject in (technician_id, last_technician_id)
    return True


def visible_to(principal: Principal) -> MaySee:
    """Return the predicate `_sees` for this caller, over a loaded ticket."""

    def check(ticket: Ticket) -> bool:
        return _sees(principal, ticket.created_by, ticket.technician_id, ticket.last_technician_id)

    return check


def _own(principal: Principal, which: TicketFilter) -> TicketFilter:
    """Return a list filter narrowed to the tickets the caller may see."""
    if principal.is_channel_only:
        return replace(which, created_by=f"http:{principal.subject}")
    if principal.is_technician_only:
        return replace(which, technician_id=principal.subject)
    return which


async def may_see_customer(intake: Intake, principal: Principal, profile: dict[str, Any]) -> bool:
    if principal.is_staff:
        return True
    if principal.is_technician_only:
        return await intake.store.serves_customer(principal.subject, profile["_id"])
    return f"http:{principal.subject}" in profile.get("channels", [])


def read_for(principal: Principal, doc: dict[str, Any]) -> TicketRead:
    return read_of(views.channel_view(doc) if principal.is_channel_only else doc)


def _utc(name: str, value: datetime) -> datetime:
    """Return a filter time in UTC; 422 naming the field without a zone or beyond the calendar."""
    if value.tzinfo is None:
        raise InvalidRequest(f"{name} needs a time zone, e.g. 2026-11-24T00:00:00Z", field=name)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidRequest(f"{name} is out of range", field=name) from None


async def _read(progress: TicketProgress, ticket_id: str, principal: Principal) -> TicketRead:
    doc = await progress.store.get(ticket_id)
    if doc is None:
        raise NotFound(f"ticket {ticket_id} not found")
    return read_for(principal, doc)
