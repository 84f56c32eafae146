"""The delivery status events notify publishes (ids, channel and template, never an address), and the
commands its mail gateway sends intake (`aftersales.requests.v1`, a command topic: it carries the sender's
address, which intake needs to know the customer)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from aftersales.notify.domain import Delivery, DeliveryStatus, Language
from aftersales.notify.inbound import InboundMail
from aftersales.shared.contracts.common import Channel
from aftersales.shared.contracts.notifications import NotificationFailed, NotificationSent
from aftersales.shared.contracts.requests import (
    MAX_DESCRIPTION_CHARS,
    CustomerIn,
    CustomerReplyRequest,
    ProductIn,
    TicketRequest,
)

# What a mail does not say: the product (staff learn it from the text) and the region (a mail has no
# address; the region of settings `INBOUND_MAIL_REGION_CODE` is where such tickets are triaged).
UNKNOWN_DEVICE = "unknown"


def _common(delivery: Delivery, now: datetime) -> dict[str, Any]:
    return {
        "delivery_id": delivery.id,
        "cause_event_id": delivery.cause_event_id,
        "cause_event_type": delivery.cause_event_type,
        "ticket_id": delivery.ticket_id,
        "recipient_id": delivery.recipient_id,
        "channel": delivery.channel.value,
        "template": delivery.template,
        "language": (delivery.language or Language.ZH).value,
        "attempts": delivery.attempts,
        "occurred_at": now,
    }


def for_status(delivery: Delivery, now: datetime) -> list[BaseModel]:
    """Return the status event of a delivery that just finished (none while it is still pending)."""
    if delivery.status == DeliveryStatus.SENT:
        return [NotificationSent(**_common(delivery, now), deferred=delivery.deferred)]
    if delivery.status == DeliveryStatus.FAILED:
        return [
            NotificationFailed(
                **_common(delivery, now),
                reason=delivery.failure or "refused",
                error=delivery.last_error or delivery.failure or "unknown",
            )
        ]
    return []


def _description(mail: InboundMail, attachments: list[str]) -> str:
    listed = f"\n\n[attachments: {', '.join(attachments)}; mail:{mail.mail_id}]" if attachments else ""
    return mail.text[: MAX_DESCRIPTION_CHARS - len(listed)] + listed if listed else mail.text


def ticket_request(mail: InboundMail, *, region_code: str, attachments: list[str]) -> TicketRequest:
    """Return the request a customer's new mail makes: sender → customer, subject → title, text (and
    the names of the attachments kept) → description; keyed by the mail's Message-ID."""
    name = mail.sender_name or mail.sender_email.split("@", 1)[0][:200]
    return TicketRequest(
        channel=Channel.EMAIL,
        customer=CustomerIn(name=name, email=mail.sender_email, region_code=region_code),
        product=ProductIn(device_type=UNKNOWN_DEVICE),
        title=mail.title,
        description=_description(mail, attachments),
        external_ref=f"mail:{mail.mail_id}",
        idempotency_key=mail.mail_id,
    )


def customer_reply(
    mail: InboundMail, ticket_id: str, *, attachments: list[str], now: datetime
) -> CustomerReplyRequest:
    """Return the reply a mail on a ticket's thread is (intake applies it only for the ticket's customer)."""
    return CustomerReplyRequest(
        ticket_id=ticket_id,
        channel=Channel.EMAIL,
        text=_description(mail, attachments),
        email=mail.sender_email,
        external_ref=f"mail:{mail.mail_id}",
        idempotency_key=mail.mail_id,
        occurred_at=now,
    )
