"""HTTP shapes of the service desk's routes: notes, messages and the conversation; corrections, merge,
close and reopen by hand; customers as records (create, edit, list, products, change log)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from aftersales.shared.contracts.common import Category, CustomerTier, Priority
from aftersales.shared.contracts.requests import MAX_REGION_CODE_CHARS, ProductIn, e164_phone
from aftersales.shared.zones import IanaZone

MAX_TEXT_CHARS = 4000
MAX_PAGE = 100

Reason = Annotated[
    str, Field(min_length=1, max_length=500, description="why (kept for staff; contact data is redacted)")
]


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)


class ConversationEntry(BaseModel):
    id: str
    kind: str = Field(description="note (staff only), message (staff to the customer) or customer_reply")
    at: datetime
    author: str = Field(description="the staff member's id, or `customer`")
    role: str
    text: str


class ConversationPage(BaseModel):
    items: list[ConversationEntry] = Field(description="oldest first")
    next_cursor: str | None = Field(default=None, description="pass as `cursor` for the next page")


class CorrectionIn(BaseModel):
    """A supervisor's correction: only the fields given change."""

    model_config = ConfigDict(extra="forbid")

    category: Category | None = None
    priority: Priority | None = None
    product: ProductIn | None = None
    reason: Reason
    expected_version: int | None = Field(default=None, ge=0, description="or the `If-Match` header")


class MergeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    original_ticket_id: str = Field(min_length=1, max_length=100)
    reason: str = Field(default="duplicate request", min_length=1, max_length=500)
    expected_version: int | None = Field(default=None, ge=0, description="the duplicate's; or `If-Match`")


class ByHandIn(BaseModel):
    """Close or reopen by hand."""

    model_config = ConfigDict(extra="forbid")

    reason: Reason
    expected_version: int | None = Field(default=None, ge=0, description="or the `If-Match` header")


class CustomerFields(BaseModel):
    """A customer's profile fields (a customer is identified by phone or e-mail when created)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    phone: str | None = Field(default=None, description="E.164, e.g. +8613800138000")
    email: EmailStr | None = None
    region_code: str | None = Field(default=None, pattern=r"^\d{6}(/\d{6})*$")
    address: str | None = Field(default=None, max_length=500)
    timezone: IanaZone | None = Field(default=None, max_length=64)
    tier: CustomerTier | None = Field(default=None, description="staff only; ignored from a channel")

    @field_validator("phone")
    @classmethod
    def _valid_phone(cls, value: str | None) -> str | None:
        return None if value is None else e164_phone(value)

    @field_validator("region_code", mode="before")
    @classmethod
    def _short_region(cls, value: object) -> object:
        if isinstance(value, str) and len(value) > MAX_REGION_CODE_CHARS:
            raise ValueError(f"must be at most {MAX_REGION_CODE_CHARS} characters")
        return value


class CustomerCreate(CustomerFields):
    region_code: str = Field(pattern=r"^\d{6}(/\d{6})*$")
    products: list[ProductIn] = Field(default_factory=list, max_length=20)


class CustomerPatch(CustomerFields):
    expected_version: int | None = Field(default=None, ge=0, description="or the `If-Match` header")


class CustomerSummary(BaseModel):
    id: str
    name: str | None = None
    tier: str | None = None
    region_code: str | None = None
    version: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None


class CustomerList(BaseModel):
    items: list[CustomerSummary]
    next_cursor: str | None = None


class CustomerHistoryEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    seq: int
    at: datetime
    change: str = Field(description="created, filled, edited, tier_set or product_added")
    by: str
    fields: list[str] = Field(description="the fields changed (their values are in the record)")


class CustomerHistory(BaseModel):
    items: list[CustomerHistoryEntry] = Field(description="newest first; the last 100 changes are kept")
    next_cursor: str | None = None


def entry_of(doc: dict[str, Any]) -> ConversationEntry:
    return ConversationEntry.model_validate(doc)
