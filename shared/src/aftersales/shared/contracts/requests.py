"""Inbound customer requests: the body of POST /v1/tickets and of `aftersales.requests.v1` messages.

Channel gateways (e-mail, chat, social, IoT remote monitoring) publish these; intake validates them with
the same rules as HTTP. This topic carries contact data because it is a command to intake, not a public
event; intake's own events carry only ids.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime

import phonenumbers
from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field, field_validator, model_validator

from aftersales.shared.contracts.common import Category, Channel, CustomerTier, Priority
from aftersales.shared.contracts.registry import event
from aftersales.shared.contracts.topics import Topic
from aftersales.shared.zones import IanaZone

MAX_DESCRIPTION_CHARS = 10_000
MAX_REGION_CODE_CHARS = 69  # ten levels of six digits
MAX_PHONE_CHARS = 32
# An IoT alert's observation time must lie in this range: anything else is a broken device clock, and
# the extremes of the calendar cannot be converted between time zones.
EARLIEST_OBSERVATION = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_OBSERVATION = datetime(2100, 1, 1, tzinfo=UTC)


def e164_phone(value: str) -> str:
    """Return a phone number in E.164 form; ValueError (a message for the caller) when it is not one."""
    if len(value) > MAX_PHONE_CHARS:
        raise ValueError(f"must be at most {MAX_PHONE_CHARS} characters")
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise ValueError("must be an international phone number like +8613800138000") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError("is not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


class CustomerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    phone: str | None = Field(default=None, description="E.164, e.g. +8613800138000 (at most 32 characters)")
    email: EmailStr | None = None
    tier: CustomerTier = CustomerTier.STANDARD
    region_code: str = Field(
        pattern=r"^\d{6}(/\d{6})*$",
        description=f"region path, e.g. 310000/310100/310104 (at most {MAX_REGION_CODE_CHARS} characters)",
    )
    address: str | None = Field(default=None, max_length=500)
    timezone: IanaZone = Field(default="Asia/Shanghai", max_length=64)

    @field_validator("region_code", mode="before")
    @classmethod
    def _short_region(cls, value: object) -> object:
        # A length check before the pattern: the limit is a validator, not a JSON Schema maxLength, so
        # the published v1 schema stays as it was (the contract gate treats any change as a new type).
        if isinstance(value, str) and len(value) > MAX_REGION_CODE_CHARS:
            raise ValueError(f"must be at most {MAX_REGION_CODE_CHARS} characters")
        return value

    @field_validator("phone")
    @classmethod
    def _valid_phone(cls, value: str | None) -> str | None:
        return None if value is None else e164_phone(value)

    @model_validator(mode="after")
    def _identified(self) -> CustomerIn:
        if self.id is None and self.name is None:
            raise ValueError("give either customer.id or customer.name with a phone or e-mail")
        if self.id is None and self.phone is None and self.email is None:
            raise ValueError("a new customer needs a phone or an e-mail")
        return self


class ProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_type: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_-]+$")
    model: str | None = Field(default=None, max_length=100)
    serial: str | None = Field(default=None, max_length=100)
    purchase_date: date | None = None
    warranty_months: int = Field(default=24, ge=0, le=240)


class IotSignal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fault_code: str = Field(min_length=1, max_length=64)
    severity: int = Field(ge=1, le=5, description="1 = info ... 5 = critical")
    observed_at: AwareDatetime

    @field_validator("observed_at")
    @classmethod
    def _plausible_time(cls, value: datetime) -> datetime:
        try:
            utc = value.astimezone(UTC)
        except OverflowError:
            utc = None
        if utc is None or not EARLIEST_OBSERVATION <= utc < LATEST_OBSERVATION:
            raise ValueError("must be between 2000-01-01 and 2100-01-01 (UTC)")
        return value


def requested_ticket_id(submitted_by: str, idempotency_key: str) -> str:
    """Return the id of the ticket a request with an idempotency key becomes (an IoT alert aside: a storm
    folds it into its device's open ticket). `submitted_by` names the sender as intake does:
    `kafka:<the request event's source>` or `http:<API client>`. Part of the contract: a channel knows its
    ticket's number as it sends the request, so it can match `aftersales.ticket.created.v1` to what it
    holds (notify: the mail a ticket came from) without personal data coming back to it."""
    return f"T-{hashlib.sha256(f'{submitted_by}|{idempotency_key}'.encode()).hexdigest()[:20]}"


@event("aftersales.request.submitted.v1", Topic.REQUESTS)
class TicketRequest(BaseModel):
    """A customer request from any channel, to become a ticket."""

    model_config = ConfigDict(extra="forbid")

    channel: Channel
    customer: CustomerIn
    product: ProductIn
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=MAX_DESCRIPTION_CHARS)
    category_hint: Category | None = None
    priority_hint: Priority | None = None
    external_ref: str | None = Field(default=None, max_length=200)
    iot: IotSignal | None = None
    idempotency_key: str | None = Field(default=None, max_length=200, description="for Kafka requests")

    @model_validator(mode="after")
    def _iot_needs_signal(self) -> TicketRequest:
        if self.channel is Channel.IOT and (self.iot is None or self.product.serial is None):
            raise ValueError("iot requests need iot.fault_code/severity/observed_at and product.serial")
        return self


@event("aftersales.request.customer-replied.v1", Topic.REQUESTS)
class CustomerReplyRequest(BaseModel):
    """A customer answered on a ticket's thread (e.g. a reply to its mail), to go on that ticket."""

    model_config = ConfigDict(extra="forbid")

    ticket_id: str = Field(min_length=1, max_length=100, description="the ticket the thread belongs to")
    channel: Channel
    text: str = Field(default="", max_length=MAX_DESCRIPTION_CHARS, description="what the customer wrote")
    email: EmailStr | None = Field(
        default=None,
        description="the sender's address; intake applies the reply only when it is the ticket's customer's",
    )
    phone: str | None = Field(default=None, description="the sender's phone number (E.164), as for email")
    external_ref: str | None = Field(
        default=None, max_length=200, description="the gateway's reference, e.g. `mail:<inbound mail id>`"
    )
    idempotency_key: str = Field(min_length=1, max_length=200, description="one reply, however often sent")
    occurred_at: AwareDatetime

    @field_validator("phone")
    @classmethod
    def _valid_phone(cls, value: str | None) -> str | None:
        return None if value is None else e164_phone(value)

    @model_validator(mode="after")
    def _sender_known(self) -> CustomerReplyRequest:
        if self.email is None and self.phone is None:
            raise ValueError("give the sender's email or phone")
        return self
