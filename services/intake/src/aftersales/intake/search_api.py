"""`GET /v1/search/tickets`: find tickets by customer phone or e-mail, customer name, ticket id, serial
number and free text (Chinese included), filtered by grid, technician, priority, region, status,
category, channel and creation date. Newest first, cursor pagination. An unknown parameter is a 422
(as on every route)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

import phonenumbers
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from aftersales.intake import identity, views
from aftersales.intake.api import Service, _sees, _utc
from aftersales.intake.domain import TicketStatus
from aftersales.intake.schemas import TicketSummary, summary_of
from aftersales.intake.search import SearchQuery
from aftersales.intake.search_service import TicketSearch
from aftersales.shared.auth import Principal
from aftersales.shared.contracts.common import Category, Channel, Priority
from aftersales.shared.errors import InvalidRequest
from aftersales.shared.roles import AnyCaller, service_of

router = APIRouter(prefix="/v1/search", tags=["search"])
Search = Annotated[TicketSearch, service_of("search", TicketSearch)]
MAX_READS = 400  # tickets one search request reads at most before it answers with a cursor
DEFAULT_PHONE_REGION = "CN"  # a number typed without its country code, e.g. 13800138000
Text = Annotated[str | None, Query(min_length=1, max_length=200)]
Id = Annotated[str | None, Query(min_length=1, max_length=100)]


class TicketHits(BaseModel):
    items: list[TicketSummary]
    next_cursor: str | None = Field(
        default=None, description="pass as `cursor` for more; present when the page is full or cut short"
    )
    complete: bool = Field(
        description="false when the search stopped after reading its share of tickets before filling the "
        "page: follow `next_cursor` for older matches"
    )
    examined: int = Field(description="candidate tickets read to answer")


@router.get(
    "/tickets",
    response_model=TicketHits,
    summary="Search tickets: phone, e-mail, name, ticket id, serial, free text (中文 too) and filters",
)
async def search_tickets(
    principal: AnyCaller,
    intake: Service,
    search: Search,
    q: Text = None,
    phone: Annotated[str | None, Query(min_length=3, max_length=32)] = None,
    email: Annotated[str | None, Query(min_length=3, max_length=254)] = None,
    name: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    ticket_id: Id = None,
    serial: Id = None,
    customer_id: Id = None,
    region_code: Annotated[str | None, Query(min_length=2, max_length=100, pattern=r"^[0-9/]+$")] = None,
    status: Annotated[list[TicketStatus] | None, Query()] = None,
    priority: Annotated[list[Priority] | None, Query()] = None,
    category: Annotated[list[Category] | None, Query()] = None,
    channel: Channel | None = None,
    grid_id: Id = None,
    technician_id: Id = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    cursor: Annotated[str | None, Query(max_length=20, pattern=r"^[0-9]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=views.MAX_PAGE)] = 20,
) -> TicketHits:
    customers = _customers(phone, email, customer_id, intake.customer_id_key)
    query = SearchQuery(
        text=q,
        customer_ids=customers,
        name=name,
        serial=serial,
        region_code=region_code,
        status=frozenset(status or ()),
        priority=frozenset(priority or ()),
        category=frozenset(category or ()),
        channel=channel,
        grid_id=grid_id,
        technician_id=technician_id,
        created_from=_utc("created_from", created_from) if created_from else None,
        created_to=_utc("created_to", created_to) if created_to else None,
    )
    visible = _visible(principal)
    view = views.channel_view if principal.is_channel_only else dict
    if ticket_id is not None:
        hits = await search.by_id(ticket_id, query, visible=visible)
        return TicketHits(items=[summary_of(view(d)) for d in hits], complete=True, examined=len(hits))
    found = await search.search(
        query, visible=visible, limit=limit, before=int(cursor) if cursor else None, max_reads=MAX_READS
    )
    return TicketHits(
        items=[summary_of(view(d)) for d in found.tickets],
        next_cursor=str(found.next_cursor) if found.next_cursor is not None else None,
        complete=found.next_cursor is None or len(found.tickets) == limit,
        examined=found.examined,
    )


def _customers(phone: str | None, email: str | None, customer_id: str | None, key: bytes) -> frozenset[str]:
    """The customers named by phone, e-mail or id (a phone or e-mail is turned into its keyed id). More
    than one must all be the same customer, or nothing matches."""
    named: list[set[str]] = []
    if phone is not None:
        named.append(identity.contact_customer_ids(email=None, phone=_e164(phone), key=key))
    if email is not None:
        if "@" not in email:
            raise InvalidRequest("email must be an e-mail address", field="email")
        named.append(identity.contact_customer_ids(email=email, phone=None, key=key))
    if customer_id is not None:
        named.append({customer_id})
    if not named:
        return frozenset()
    common = set.intersection(*named)
    return frozenset(common) if common else frozenset({"-none-"})


def _e164(phone: str) -> str:
    """A phone as typed at a desk (spaces, dashes, with or without +86) in E.164 form."""
    try:
        parsed = phonenumbers.parse(phone, DEFAULT_PHONE_REGION)
    except phonenumbers.NumberParseException:
        raise InvalidRequest("phone is not a phone number", field="phone") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidRequest("phone is not a valid phone number", field="phone")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _visible(principal: Principal) -> Any:
    def check(doc: Mapping[str, Any]) -> bool:
        return _sees(
            principal, doc.get("created_by"), doc.get("technician_id"), doc.get("last_technician_id")
        )

    return check
