"""Intake's HTTP routes: submit, read, list and act on tickets; read a customer's profile and history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Response, status

from aftersales.intake import customers, domain, metrics
from aftersales.intake.domain import TicketStatus
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
from aftersales.intake.service import Intake
from aftersales.shared.contracts.common import Category, Channel
from aftersales.shared.contracts.requests import TicketRequest
from aftersales.shared.errors import Forbidden, InvalidRequest, NotFound
from aftersales.shared.http import Principal, require
from aftersales.shared.settings import Scope

Submitter = Annotated[Principal, Depends(require(Scope.CHANNEL, Scope.SUPERVISOR))]
Reader = Annotated[Principal, Depends(require(Scope.CHANNEL, Scope.TECHNICIAN, Scope.SUPERVISOR))]
Agent = Annotated[Principal, Depends(require(Scope.CHANNEL, Scope.SUPERVISOR))]
Desk = Annotated[Principal, Depends(require(Scope.CHANNEL, Scope.TECHNICIAN, Scope.SUPERVISOR))]
Supervisor = Annotated[Principal, Depends(require(Scope.SUPERVISOR))]
TicketId = Annotated[str, Path(max_length=100)]
CustomerId = Annotated[str, Path(max_length=100)]


def router(intake: Intake) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["tickets"])

    @api.post(
        "/tickets",
        status_code=status.HTTP_201_CREATED,
        summary="Submit a customer request; 201 when a ticket was opened, 200 for a replay or a storm merge",
        responses={200: {"model": TicketReceipt}, 403: {}, 409: {}, 413: {}, 422: {}},
    )
    async def submit_ticket(
        body: TicketRequest,
        principal: Submitter,
        response: Response,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> TicketReceipt:
        if (
            principal.channel
            and body.channel.value != principal.channel
            and Scope.ADMIN not in principal.scopes
        ):
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
        doc = submitted.ticket
        return TicketReceipt(
            id=doc["_id"],
            status=doc["status"],
            category=doc["category"],
            priority=doc["priority"],
            customer_id=doc["customer_id"],
            rules_version=doc["rules_version"],
            outcome=submitted.outcome,
            alert_count=doc.get("alert_count"),
        )

    @api.get("/tickets/{ticket_id}", summary="A ticket with its status and timeline")
    async def get_ticket(ticket_id: TicketId, principal: Reader) -> TicketRead:
        doc = await intake.store.get(ticket_id)
        if doc is None or not _visible(principal)(doc):
            raise NotFound(f"ticket {ticket_id} not found")
        return _read_for(principal, doc)

    @api.get("/tickets", summary="Tickets, newest first, filtered; cursor pagination")
    async def list_tickets(
        principal: Reader,
        status_: Annotated[TicketStatus | None, Query(alias="status")] = None,
        customer_id: Annotated[str | None, Query(max_length=100)] = None,
        channel: Channel | None = None,
        category: Category | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        cursor: Annotated[str | None, Query(max_length=500)] = None,
        limit: Annotated[int, Query(ge=1, le=domain.MAX_PAGE)] = 50,
    ) -> TicketPage:
        query: dict[str, Any] = {}
        if status_ is not None:
            query["status"] = status_.value
        if customer_id is not None:
            query["customer_id"] = customer_id
        if channel is not None:
            query["channel"] = channel.value
        if category is not None:
            query["category"] = category.value
        created: dict[str, Any] = {}
        for name, value, op in (("created_from", created_from, "$gte"), ("created_to", created_to, "$lt")):
            if value is not None:
                created[op] = _utc(name, value)
        if created:
            query["created_at"] = created
        if principal.is_channel_only:
            query["created_by"] = f"http:{principal.subject}"
        elif principal.is_technician_only:
            query["technician_id"] = principal.subject
        after = domain.decode_cursor(cursor) if cursor else None
        docs = await intake.store.list(query, after=after, limit=limit + 1)
        page, more = docs[:limit], len(docs) > limit
        next_cursor = domain.encode_cursor(page[-1]["created_at"], page[-1]["_id"]) if more and page else None
        view = domain.channel_view if principal.is_channel_only else dict
        return TicketPage(items=[summary_of(view(d)) for d in page], next_cursor=next_cursor)

    @api.post("/tickets/{ticket_id}/cancel", summary="Cancel a ticket that is not resolved yet")
    async def cancel_ticket(
        ticket_id: TicketId, principal: Agent, body: CancelIn | None = None
    ) -> TicketRead:
        reason = (body or CancelIn()).reason
        await intake.cancel(ticket_id, visible=_visible(principal), reason=reason)
        return await _read(intake, ticket_id, principal)

    @api.post(
        "/tickets/{ticket_id}/customer-reply",
        summary="The customer answered: a ticket waiting on the customer goes back to work",
    )
    async def customer_reply(
        ticket_id: TicketId, principal: Agent, body: CustomerReplyIn | None = None
    ) -> TicketRead:
        message = body.message if body else None
        await intake.customer_replied(ticket_id, visible=_visible(principal), message=message)
        return await _read(intake, ticket_id, principal)

    @api.get("/customers/{customer_id}", tags=["customers"], summary="A customer's profile and history")
    async def get_customer(customer_id: CustomerId, principal: Desk) -> CustomerRead:
        """Staff see every customer; a technician the customers of its tickets; a channel the customers
        it has served, with contact data masked and only the tickets it created."""
        profile = await intake.store.customer(customer_id)
        caller = f"http:{principal.subject}"
        if profile is None or not await _may_see_customer(intake, principal, profile):
            raise NotFound(f"customer {customer_id} not found")
        query: dict[str, Any] = {"customer_id": customer_id}
        if principal.is_channel_only:
            query["created_by"] = caller
        elif principal.is_technician_only:
            query["technician_id"] = principal.subject
        tickets = await intake.store.list(query, after=None, limit=50)
        view = domain.channel_view if principal.is_channel_only else dict
        shown = customers.contact_view(profile) if principal.is_channel_only else profile
        return CustomerRead.model_validate(
            {
                **shown,
                "id": profile["_id"],
                "ticket_count": await intake.store.customer_ticket_count(customer_id)
                if principal.is_staff
                else len(tickets),
                "tickets": [summary_of(view(t)) for t in tickets],
            }
        )

    @api.put(
        "/customers/{customer_id}/tier",
        tags=["customers"],
        summary="Set a customer's tier (supervisors): the platform's record that tickets are judged by",
    )
    async def set_customer_tier(
        customer_id: CustomerId, body: CustomerTierIn, principal: Supervisor
    ) -> CustomerRead:
        if not await intake.store.set_customer_tier(customer_id, body.tier.value, by=principal.subject):
            raise NotFound(f"customer {customer_id} not found")
        return await get_customer(customer_id, principal)

    return api


def _visible(principal: Principal) -> Any:
    """Return a predicate: may this caller see the ticket? A channel token sees only what it created,
    a technician only the tickets it works (or last worked) on."""

    def check(doc: dict[str, Any]) -> bool:
        if principal.is_channel_only:
            return bool(doc.get("created_by") == f"http:{principal.subject}")
        if principal.is_technician_only:
            return principal.subject in (doc.get("technician_id"), doc.get("last_technician_id"))
        return True

    return check


async def _may_see_customer(intake: Intake, principal: Principal, profile: dict[str, Any]) -> bool:
    if principal.is_staff:
        return True
    if principal.is_technician_only:
        return await intake.store.serves_customer(principal.subject, profile["_id"])
    return f"http:{principal.subject}" in profile.get("channels", [])


def _read_for(principal: Principal, doc: dict[str, Any]) -> TicketRead:
    return read_of(domain.channel_view(doc) if principal.is_channel_only else doc)


def _utc(name: str, value: datetime) -> datetime:
    """Return a filter time in UTC; 422 naming the field without a zone or beyond the calendar."""
    if value.tzinfo is None:
        raise InvalidRequest(f"{name} needs a time zone, e.g. 2026-11-24T00:00:00Z", field=name)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidRequest(f"{name} is out of range", field=name) from None


async def _read(intake: Intake, ticket_id: str, principal: Principal) -> TicketRead:
    doc = await intake.store.get(ticket_id)
    if doc is None:
        raise NotFound(f"ticket {ticket_id} not found")
    return _read_for(principal, doc)
