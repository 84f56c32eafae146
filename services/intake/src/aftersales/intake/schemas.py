"""HTTP shapes of intake: what the API returns (the request body is the shared TicketRequest)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aftersales.intake.domain import TicketStatus
from aftersales.shared.contracts.common import Category, Channel, CustomerTier, Priority


class TicketReceipt(BaseModel):
    """The answer to a submitted request."""

    id: str
    status: TicketStatus
    category: Category
    priority: Priority
    customer_id: str
    rules_version: str
    outcome: str = Field(description="created, merged (joined an open alert storm) or replayed (same key)")
    alert_count: int | None = None


class ProductRead(BaseModel):
    device_type: str
    model: str | None = None
    serial: str | None = None
    purchase_date: date | None = None
    warranty_months: int | None = None


class TimelineEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    at: datetime
    type: str
    source: str


class TicketSummary(BaseModel):
    id: str
    status: TicketStatus
    channel: Channel
    category: Category
    priority: Priority
    title: str
    customer_id: str
    region_code: str
    device_type: str
    technician_id: str | None = None
    grid_id: str | None = Field(default=None, description="the service grid (网格) of its work order")
    alert_count: int | None = None
    created_at: datetime
    updated_at: datetime


class TicketRead(TicketSummary):
    description: str
    external_ref: str | None = None
    customer_tier: CustomerTier
    product: ProductRead
    under_warranty: bool | None = None
    rules_version: str
    matched_rules: list[str] = Field(default_factory=list)
    priority_hint: Priority | None = Field(
        default=None, description="the submitter's hint (not applied to a channel's request)"
    )
    fault_code: str | None = None
    severity: int | None = None
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    last_technician_id: str | None = None
    reopen_count: int = 0
    status_changed_at: datetime | None = None
    version: int = Field(default=0, description="changes with every change; send it as `If-Match`")
    close_reason: str | None = Field(
        default=None, description="confirmed_resolved, closed_by_agent or merged"
    )
    merged_into: str | None = Field(default=None, description="a merged duplicate: its original ticket")
    timeline: list[TimelineEntry] = Field(
        description="what happened to the ticket, oldest first: its last 500 entries (older ones are dropped)"
    )


class TicketPage(BaseModel):
    items: list[TicketSummary]
    next_cursor: str | None = Field(default=None, description="pass as `cursor` for the next page")


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="cancelled at the customer's request", min_length=1, max_length=500)


class CustomerReplyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str | None = Field(default=None, max_length=10_000)


class CustomerTierIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tier: CustomerTier


class CustomerRead(BaseModel):
    id: str
    name: str | None = None
    phone: str | None = None
    email: str | None = None
    tier: CustomerTier | None = None
    region_code: str | None = None
    address: str | None = None
    timezone: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    version: int = Field(default=0, description="changes with every edit; send it as `If-Match`")
    products: list[dict[str, Any]] = Field(default_factory=list)
    ticket_count: int
    tickets: list[TicketSummary] = Field(description="most recent first, up to 50")


def summary_of(doc: dict[str, Any]) -> TicketSummary:
    return TicketSummary.model_validate(_flat(doc))


def read_of(doc: dict[str, Any]) -> TicketRead:
    return TicketRead.model_validate(_flat(doc))


def _flat(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "id": doc["_id"], "device_type": (doc.get("product") or {}).get("device_type", "unknown")}
