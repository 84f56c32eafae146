"""Customers as records over HTTP: create (staff, or a channel that then serves the customer), list
(a channel only the customers it serves), edit (supervisors; `If-Match`), add products, read the change
log. Which customers a caller sees is `api.may_see_customer`, as for reading one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response, status

from aftersales.intake.api import Book, CustomerId, Service, get_customer, may_see_customer
from aftersales.intake.customer_book import Profile
from aftersales.intake.desk_schemas import (
    MAX_PAGE,
    CustomerCreate,
    CustomerHistory,
    CustomerList,
    CustomerPatch,
    CustomerSummary,
)
from aftersales.intake.schemas import CustomerRead
from aftersales.intake.views import expected_version
from aftersales.shared.auth import Principal
from aftersales.shared.contracts.common import CustomerTier
from aftersales.shared.contracts.requests import ProductIn
from aftersales.shared.errors import InvalidRequest, NotFound
from aftersales.shared.roles import AnyCaller, ChannelOrSupervisor, Supervisor

IfMatch = Annotated[str | None, Header(max_length=40, description="the customer's `version`")]
Cursor = Annotated[str | None, Query(max_length=100)]

router = APIRouter(prefix="/v1/customers", tags=["customers"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a customer identified by phone or e-mail; 200 when a channel names one it now serves "
    "(its empty fields filled, nothing overwritten); 409 for staff when it exists",
)
async def create_customer(
    body: CustomerCreate, principal: ChannelOrSupervisor, intake: Service, book: Book, response: Response
) -> CustomerRead:
    fields = body.model_dump(exclude={"tier", "products"}, exclude_none=True)
    record, created = await book.create(
        Profile(fields, tier=body.tier),
        body.products,
        caller=f"http:{principal.subject}",
        staff=principal.is_staff,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return await get_customer(record["_id"], principal, intake)


@router.get("", summary="Customers by id (a channel: those it serves); cursor pagination")
async def list_customers(
    principal: ChannelOrSupervisor,
    book: Book,
    tier: CustomerTier | None = None,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> CustomerList:
    channel = None if principal.is_staff else f"http:{principal.subject}"
    found = await book.records.list(
        channel=channel, tier=tier.value if tier else None, after=cursor, limit=limit + 1
    )
    page = found[:limit]
    items = [CustomerSummary.model_validate({**d, "id": d["_id"]}) for d in page]
    if not principal.is_staff:
        items = [i.model_copy(update={"name": None}) for i in items]
    return CustomerList(items=items, next_cursor=page[-1]["_id"] if len(found) > limit and page else None)


@router.patch("/{customer_id}", summary="Edit a customer's profile or tier (supervisors)")
async def edit_customer(
    customer_id: CustomerId,
    body: CustomerPatch,
    principal: Supervisor,
    intake: Service,
    book: Book,
    if_match: IfMatch = None,
) -> CustomerRead:
    fields = body.model_dump(exclude={"tier", "expected_version"}, exclude_none=True)
    version = expected_version(if_match, body.expected_version)
    await book.edit(
        customer_id, Profile(fields, tier=body.tier), by=principal.subject, expected_version=version
    )
    return await get_customer(customer_id, principal, intake)


@router.post(
    "/{customer_id}/products",
    status_code=status.HTTP_201_CREATED,
    summary="Add a product (model, serial) to a customer (staff, or a channel that serves it)",
)
async def add_product(
    customer_id: CustomerId, body: ProductIn, principal: ChannelOrSupervisor, intake: Service, book: Book
) -> CustomerRead:
    await _visible(intake, principal, customer_id)
    await book.add_product(customer_id, body, by=f"http:{principal.subject}", at=datetime.now(UTC))
    return await get_customer(customer_id, principal, intake)


@router.get("/{customer_id}/history", summary="A customer's change log, newest first (its last 100 changes)")
async def customer_history(
    customer_id: CustomerId,
    principal: AnyCaller,
    intake: Service,
    book: Book,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> CustomerHistory:
    record = await _visible(intake, principal, customer_id)
    if cursor is not None and not (cursor.isascii() and cursor.isdigit()):
        raise InvalidRequest("cursor is not one this API returned", field="cursor")
    entries, before = await book.records.history(record, before=int(cursor) if cursor else None, limit=limit)
    return CustomerHistory.model_validate(
        {"items": entries, "next_cursor": str(before) if before is not None else None}
    )


async def _visible(intake: Service, principal: Principal, customer_id: str) -> dict[str, Any]:
    record = await intake.store.customer(customer_id)
    if record is None or not await may_see_customer(intake, principal, record):
        raise NotFound(f"customer {customer_id} not found")
    return record
