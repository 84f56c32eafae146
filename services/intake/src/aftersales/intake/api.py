"""Intake's HTTP routes: submit, read, list and act on tickets; read a customer's profile and history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response, status

from aftersales.intake import domain, metrics
from aftersales.intake.domain import TicketStatus
from aftersales.intake.schemas import (
    CancelIn,
    CustomerRead,
    CustomerReplyIn,
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
            body, caller=f"http:{principal.subject}", idempotency_key=idempotency_key, source="http"
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
    async def get_ticket(ticket_id: str, principal: Reader) -> TicketRead:
        doc = await intake.store.get(ticket_id)
        if doc is None or not _visible(principal)(doc):
            raise NotFound(f"ticket {ticket_id} not found")
        return read_of(doc)

    @api.get("/tickets", summary="Tickets, newest first, filtered; cursor pagination")
    async def list_tickets(
        principal: Reader,
        status_: Annotated[TicketStatus | None, Query(alias="status")] = None,
        customer_id: str | None = None,
        channel: Channel | None = None,
        category: Category | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        cursor: str | None = None,
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
                if value.tzinfo is None:
                    raise InvalidRequest(f"{name} needs a time zone, e.g. 2026-11-24T00:00:00Z", field=name)
                created[op] = value
        if created:
            query["created_at"] = created
        if principal.is_channel_only:
            query["created_by"] = f"http:{principal.subject}"
        after = domain.decode_cursor(cursor) if cursor else None
        docs = await intake.store.list(query, after=after, limit=limit + 1)
        page, more = docs[:limit], len(docs) > limit
        next_cursor = domain.encode_cursor(page[-1]["created_at"], page[-1]["_id"]) if more and page else None
        return TicketPage(items=[summary_of(d) for d in page], next_cursor=next_cursor)

    @api.post("/tickets/{ticket_id}/cancel", summary="Cancel a ticket that is not resolved yet")
    async def cancel_ticket(ticket_id: str, principal: Agent, body: CancelIn | None = None) -> TicketRead:
        reason = (body or CancelIn()).reason
        await intake.cancel(ticket_id, visible=_visible(principal), reason=reason)
        return await _read(intake, ticket_id)

    @api.post(
        "/tickets/{ticket_id}/customer-reply",
        summary="The customer answered: a ticket waiting on the customer goes back to work",
    )
    async def customer_reply(
        ticket_id: str, principal: Agent, body: CustomerReplyIn | None = None
    ) -> TicketRead:
        message = body.message if body else None
        await intake.customer_replied(ticket_id, visible=_visible(principal), message=message)
        return await _read(intake, ticket_id)

    @api.get("/customers/{customer_id}", tags=["customers"], summary="A customer's profile and history")
    async def get_customer(customer_id: str, principal: Desk) -> CustomerRead:
        profile = await intake.store.customer(customer_id)
        if profile is None:
            raise NotFound(f"customer {customer_id} not found")
        query: dict[str, Any] = {"customer_id": customer_id}
        if principal.is_channel_only:
            query["created_by"] = f"http:{principal.subject}"
        tickets = await intake.store.list(query, after=None, limit=50)
        if principal.is_channel_only and not tickets:
            raise NotFound(f"customer {customer_id} not found")
        return CustomerRead.model_validate(
            {
                **profile,
                "id": profile["_id"],
                "ticket_count": await intake.store.customer_ticket_count(customer_id)
                if not principal.is_channel_only
                else len(tickets),
                "tickets": [summary_of(t) for t in tickets],
            }
        )

    return api


def _visible(principal: Principal) -> Any:
    """Return a predicate: may this caller see the ticket? A channel token sees only what it created."""

    def check(doc: dict[str, Any]) -> bool:
        return not principal.is_channel_only or doc.get("created_by") == f"http:{principal.subject}"

    return check


async def _read(intake: Intake, ticket_id: str) -> TicketRead:
    doc = await intake.store.get(ticket_id)
    if doc is None:
        raise NotFound(f"ticket {ticket_id} not found")
    return read_of(doc)
