"""HTTP routes of notify: recipients (customers' contact points from the channels that serve them, staff
and on-call from administrators), templates, the delivery status of an event's or a ticket's messages,
the mails the inbound gateway received (what became of each, and its attachments), and Alertmanager's
webhook for on-call."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from datetime import datetime, time
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, EmailStr, Field, field_validator

from aftersales.notify.alerts import AlertmanagerWebhook, OnCall
from aftersales.notify.domain import (
    CUSTOMER_CHANNELS,
    ROBOTS,
    ChannelName,
    DeliveryStatus,
    Language,
    Recipient,
    RecipientKind,
    Robot,
    do_not_disturb,
    recipient_id,
)
from aftersales.notify.inbound import mail_id_of
from aftersales.notify.service import Inbox, Notifications
from aftersales.shared.auth import Principal, RateLimiter, Unauthorized, refuse_unknown_query
from aftersales.shared.contracts.requests import e164_phone
from aftersales.shared.errors import InvalidRequest, NotFound
from aftersales.shared.roles import Admin, ChannelOrSupervisor, Staff, Supervisor, service_of
from aftersales.shared.zones import IanaZone

Service = Annotated[Notifications, service_of("notifications", Notifications)]
InboxService = Annotated[Inbox, service_of("inbox", Inbox)]
RecipientKey = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]


class StaffKind(StrEnum):
    """The recipients an administrator configures, by path segment."""

    STAFF = "staff"  # a person by platform id (technician, supervisor, complaint owner)
    GRIDS = "grids"  # the supervisor on duty for a grid, by grid id
    ONCALL = "oncall"  # an on-call rotation

    @property
    def kind(self) -> RecipientKind:
        return {"staff": RecipientKind.STAFF, "grids": RecipientKind.GRID, "oncall": RecipientKind.ONCALL}[
            self.value
        ]


class QuietHours(BaseModel):
    start: time = Field(description="customer-local, e.g. 21:00")
    end: time = Field(description="customer-local, e.g. 09:00 (a window may wrap midnight)")

    @field_validator("start", "end")
    @classmethod
    def _wall_clock(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError("is a local wall-clock time (the customer's time zone applies): no offset")
        return value


class RobotWrite(BaseModel):
    url: str = Field(min_length=8, max_length=500, pattern=r"^https?://", description="the robot's webhook")
    secret: str | None = Field(default=None, min_length=1, max_length=200, description="signing secret")


class RecipientWrite(BaseModel):
    channels: list[ChannelName] = Field(
        min_length=1, max_length=5, description="preferred channels, in order"
    )
    language: Language = Language.ZH
    email: EmailStr | None = None
    phone: str | None = Field(default=None, max_length=32, description="E.164, e.g. +8613800138000")

    @field_validator("phone")
    @classmethod
    def _valid_phone(cls, value: str | None) -> str | None:
        return None if value is None else e164_phone(value)


class CustomerWrite(RecipientWrite):
    """A customer's contact points and preferences, as the channel serving it knows them."""

    timezone: IanaZone = Field(default="Asia/Shanghai", max_length=64)
    do_not_disturb: QuietHours | None = Field(
        default_factory=lambda: QuietHours(start=time(21, 0), end=time(9, 0)),
        description="local hours without messages (null: none)",
    )

    @field_validator("channels")
    @classmethod
    def _customer_channels(cls, value: list[ChannelName]) -> list[ChannelName]:
        if any(c not in CUSTOMER_CHANNELS for c in value):
            raise ValueError("customers are reached by email or sms")
        return value


class StaffWrite(RecipientWrite):
    """A staff recipient's channels: e-mail, SMS, and group robots. Never held back by quiet hours."""

    robots: dict[Literal["dingtalk", "wecom", "feishu"], RobotWrite] = Field(
        default_factory=dict, description="the group robot of each robot channel"
    )


class RobotRead(BaseModel):
    host: str = Field(description="the webhook's host (its path holds the access token)")
    signed: bool


class RecipientRead(BaseModel):
    id: str
    kind: RecipientKind
    channels: list[ChannelName]
    language: Language
    email: str | None = None
    phone: str | None = None
    robots: dict[ChannelName, RobotRead] = {}
    timezone: str
    do_not_disturb: QuietHours | None = None


def _read(recipient: Recipient) -> RecipientRead:
    dnd = recipient.do_not_disturb
    return RecipientRead(
        id=recipient.id,
        kind=recipient.kind,
        channels=list(recipient.channels),
        language=recipient.language,
        email=recipient.email,
        phone=recipient.phone,
        robots={
            c: RobotRead(host=urlsplit(r.url).hostname or "", signed=r.secret is not None)
            for c, r in recipient.robots.items()
        },
        timezone=recipient.timezone,
        do_not_disturb=None if dnd is None else QuietHours(start=dnd.start, end=dnd.end),
    )


def _check_addresses(body: RecipientWrite, robots: Iterable[str] = ()) -> None:
    """Refuse a channel the recipient gave no address for (422 naming the missing field)."""
    for channel in body.channels:
        if channel == ChannelName.EMAIL and body.email is None:
            raise InvalidRequest("email: channel email needs an e-mail address", field="email")
        if channel == ChannelName.SMS and body.phone is None:
            raise InvalidRequest("phone: channel sms needs a phone number", field="phone")
        if channel in ROBOTS and channel.value not in robots:
            raise InvalidRequest(
                f"robots.{channel.value}: channel {channel.value} needs its robot", field="robots"
            )


def _recipient(body: RecipientWrite, kind: RecipientKind, key: str, **more: Any) -> Recipient:
    return Recipient(
        id=recipient_id(kind, key),
        kind=kind,
        channels=tuple(dict.fromkeys(body.channels)),
        language=body.language,
        email=body.email,
        phone=body.phone,
        **more,
    )


recipients = APIRouter(prefix="/v1/recipients", tags=["recipients"])


async def _customer_for(
    notifications: Notifications, caller: Principal, customer_id: str
) -> Recipient | None:
    """Return the customer recipient if the caller may see it (None when there is none yet): a channel
    only the customers it registered, a supervisor any."""
    found = await notifications.find_recipient(recipient_id(RecipientKind.CUSTOMER, customer_id))
    if found is not None and caller.is_channel_only and found.registered_by != caller.subject:
        raise NotFound(f"recipient customer {customer_id} not found")
    return found


@recipients.put(
    "/customers/{customer_id}",
    summary="Register or replace a customer's contact points (201 when new)",
    responses={201: {"model": RecipientRead, "description": "registered"}},
)
async def put_customer(
    customer_id: RecipientKey,
    body: CustomerWrite,
    caller: ChannelOrSupervisor,
    notifications: Service,
    response: Response,
) -> RecipientRead:
    _check_addresses(body)
    before = await _customer_for(notifications, caller, customer_id)
    quiet = body.do_not_disturb
    recipient = _recipient(
        body,
        RecipientKind.CUSTOMER,
        customer_id,
        timezone=body.timezone,
        do_not_disturb=None if quiet is None else do_not_disturb(quiet.start, quiet.end),
        registered_by=before.registered_by if before is not None else caller.subject,
    )
    if await notifications.put_recipient(recipient):
        response.status_code = 201
    return _read(recipient)


@recipients.get("/customers/{customer_id}", summary="A customer's contact points and preferences")
async def get_customer(
    customer_id: RecipientKey, caller: ChannelOrSupervisor, notifications: Service
) -> RecipientRead:
    found = await _customer_for(notifications, caller, customer_id)
    if found is None:
        raise NotFound(f"recipient customer {customer_id} not found")
    return _read(found)


@recipients.delete("/customers/{customer_id}", status_code=204, summary="Forget a customer's contact points")
async def delete_customer(
    customer_id: RecipientKey, caller: ChannelOrSupervisor, notifications: Service
) -> None:
    if await _customer_for(notifications, caller, customer_id) is None:
        raise NotFound(f"recipient customer {customer_id} not found")
    await notifications.remove_recipient(recipient_id(RecipientKind.CUSTOMER, customer_id))


@recipients.put(
    "/{kind}/{key}",
    summary="Configure a staff, grid-supervisor or on-call recipient (admin; 201 when new)",
    responses={201: {"model": RecipientRead, "description": "configured"}},
)
async def put_staff(
    kind: StaffKind,
    key: RecipientKey,
    body: StaffWrite,
    caller: Admin,
    notifications: Service,
    response: Response,
) -> RecipientRead:
    _check_addresses(body, body.robots)
    robots = {ChannelName(c): Robot(r.url, r.secret) for c, r in body.robots.items()}
    recipient = _recipient(body, kind.kind, key, robots=robots, registered_by=caller.subject)
    if await notifications.put_recipient(recipient):
        response.status_code = 201
    return _read(recipient)


@recipients.get("/{kind}/{key}", summary="A staff, grid-supervisor or on-call recipient (admin)")
async def get_staff(kind: StaffKind, key: RecipientKey, _: Admin, notifications: Service) -> RecipientRead:
    return _read(await notifications.recipient(recipient_id(kind.kind, key)))


@recipients.delete("/{kind}/{key}", status_code=204, summary="Remove a staff recipient (admin)")
async def delete_staff(kind: StaffKind, key: RecipientKey, _: Admin, notifications: Service) -> None:
    if not await notifications.remove_recipient(recipient_id(kind.kind, key)):
        raise NotFound(f"recipient {kind.kind.value}:{key} not found")


class TemplateRead(BaseModel):
    key: str
    language: Language
    subject: str
    body: str


class TemplateWrite(BaseModel):
    subject: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=2000)


class TemplateList(BaseModel):
    items: list[TemplateRead]
    count: int


templates = APIRouter(prefix="/v1/templates", tags=["templates"])


@templates.get("", summary="Every message template in force (zh and en)")
async def list_templates(_: Staff, notifications: Service) -> TemplateList:
    items = [
        TemplateRead(key=t.key, language=t.language, subject=t.subject, body=t.body)
        for t in await notifications.templates.all()
    ]
    return TemplateList(items=items, count=len(items))


@templates.put("/{key}/{language}", summary="Edit a message template (admin; parameters are checked)")
async def put_template(
    key: Annotated[str, Path(max_length=64)],
    language: Language,
    body: TemplateWrite,
    caller: Admin,
    notifications: Service,
) -> TemplateRead:
    t = await notifications.templates.put(key, language, body.subject, body.body, by=caller.subject)
    return TemplateRead(key=t.key, language=t.language, subject=t.subject, body=t.body)


class DeliveryRead(BaseModel):
    id: str
    cause_event_id: str
    cause_event_type: str
    ticket_id: str | None = None
    recipient_id: str
    channel: ChannelName
    template: str
    status: DeliveryStatus
    attempts: int
    due_at: datetime
    deferred: bool = False
    language: Language | None = None
    last_error: str | None = None
    failure: str | None = None
    created_at: datetime
    updated_at: datetime


class DeliveryList(BaseModel):
    items: list[DeliveryRead]
    count: int


deliveries = APIRouter(prefix="/v1/deliveries", tags=["deliveries"])


@deliveries.get("", summary="The messages an event (or a ticket) caused, with their delivery status")
async def list_deliveries(
    _: Supervisor,
    notifications: Service,
    event_id: Annotated[str | None, Query(max_length=200)] = None,
    ticket_id: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DeliveryList:
    if event_id is None and ticket_id is None:
        raise InvalidRequest("event_id: give event_id or ticket_id", field="event_id")
    docs: list[dict[str, Any]] = await notifications.deliveries_of(
        {"cause_event_id": event_id, "ticket_id": ticket_id}, limit
    )
    items = [DeliveryRead.model_validate({**d, "id": d["_id"]}) for d in docs]
    return DeliveryList(items=items, count=len(items))


class AttachmentRead(BaseModel):
    id: str
    name: str | None = Field(default=None, description="the file name; none once the mail was erased")
    content_type: str
    size_bytes: int
    sha256: str | None = Field(
        default=None, description="the content's SHA-256; none once the mail was erased"
    )
    refused: Literal["type", "too_many"] | None = Field(
        default=None, description="why it was not kept (its content is not stored)"
    )


class InboundMailRead(BaseModel):
    mail_id: str = Field(description="the hash of the mail's Message-ID")
    kind: Literal["request", "reply"] = Field(description="a new request, or a reply on a ticket's thread")
    ticket_id: str | None = Field(default=None, description="the ticket a reply was for")
    received_at: datetime
    attachments: list[AttachmentRead]
    erased_at: datetime | None = Field(
        default=None,
        description="when its personal content (attachments, names) was erased: an erasure or retention",
    )


inbound_mail = APIRouter(prefix="/v1/inbound-mail", tags=["inbound mail"])
MailKey = Annotated[str, Path(min_length=1, max_length=300, description="mail id, or the raw Message-ID")]


def _mail_id(key: str) -> str:
    """Accept the mail id a ticket's `external_ref` names (`mail:<id>`) or the mail's own Message-ID."""
    return mail_id_of(key) if "@" in key else key.removeprefix("mail:")


@inbound_mail.get("/{mail_id}", summary="A received mail: what it became and its attachments (staff)")
async def get_inbound_mail(mail_id: MailKey, _: Staff, inbox: InboxService) -> InboundMailRead:
    doc = await inbox.mail(_mail_id(mail_id))
    return InboundMailRead.model_validate({**doc, "mail_id": doc["_id"]})


@inbound_mail.get(
    "/{mail_id}/attachments/{n}",
    summary="The content of a received mail's attachment (staff)",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "the attachment"}},
)
async def get_inbound_attachment(
    mail_id: MailKey, n: Annotated[int, Path(ge=0, le=100)], _: Staff, inbox: InboxService
) -> Response:
    entry, content = await inbox.attachment(_mail_id(mail_id), n)
    return Response(
        content,
        media_type=str(entry["content_type"]),
        headers={
            "Content-Disposition": "attachment",
            "X-Content-Type-Options": "nosniff",
            "X-Attachment-SHA256": str(entry["sha256"]),
        },
    )


# ------------------------------------------------------------------ Alertmanager → on-call

_bearer = HTTPBearer(auto_error=False, description="ALERTMANAGER_WEBHOOK_TOKEN")


async def alertmanager_caller(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Admit Alertmanager by the bearer token of its `http_config.authorization` (not an API token)."""
    expected: str | None = request.app.state.alertmanager_token
    given = credentials.credentials if credentials is not None else ""
    if expected is None or not hmac.compare_digest(given.encode(), expected.encode()):
        limiter: RateLimiter = request.app.state.rate_limiter
        await limiter.hit(f"addr:{request.client.host if request.client else 'unknown'}")
        raise Unauthorized("missing or wrong Alertmanager bearer token (ALERTMANAGER_WEBHOOK_TOKEN)")
    refuse_unknown_query(request)


class AlertsAccepted(BaseModel):
    key: str = Field(description="the notification's key: the cause_event_id of its deliveries")
    recipient_id: str = Field(description="the on-call rotation, `oncall:<rotation>`")
    planned: int = Field(description="deliveries planned now (0: seen before, or nobody configured)")


alerts = APIRouter(prefix="/v1/alerts", tags=["alerts"])


@alerts.post(
    "/alertmanager",
    summary="Alertmanager's webhook (version 4): one message per group notification to on-call",
    dependencies=[Depends(alertmanager_caller)],
)
async def alertmanager_webhook(hook: AlertmanagerWebhook, request: Request) -> AlertsAccepted:
    oncall: OnCall = request.app.state.oncall
    key, to, planned = await oncall.receive(hook)
    return AlertsAccepted(key=key, recipient_id=to, planned=planned)
