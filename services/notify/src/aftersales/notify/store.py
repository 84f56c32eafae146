"""Notify's MongoDB access: recipients (contact points and preferences), its copy of ticket facts,
administrators' template edits, and deliveries (with their outbox and attempt timers).

A delivery's `_id` is (cause event, recipient, channel): inserting it twice fails, so a redelivered event
plans nothing new. Each attempt's timer is scheduled before the write it belongs to; its handler checks
the delivery's status and attempt number, so a stale timer is a no-op.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, time
from typing import Any

from pydantic import BaseModel
from pymongo.errors import DuplicateKeyError

from aftersales.notify.domain import (
    ChannelName,
    Delivery,
    DeliveryStatus,
    Language,
    Notice,
    Recipient,
    RecipientKind,
    Robot,
    do_not_disturb,
)
from aftersales.notify.notices import TicketCopy
from aftersales.notify.templates import MessageTemplate
from aftersales.notify.timers import ATTEMPT_DUE, CONTACT_WAIT
from aftersales.shared.contracts import Topic
from aftersales.shared.envelope import CloudEvent, new_event
from aftersales.shared.mongo import Database, IndexSpec
from aftersales.shared.outbox import new_with_events, with_events
from aftersales.shared.runtime import ServiceRuntime

SOURCE = "/aftersales/notify"
RECIPIENTS, TICKETS, TEMPLATES, DELIVERIES = "recipients", "tickets", "templates", "deliveries"
INBOUND_MAIL, INBOUND_ATTACHMENTS = "inbound_mail", "inbound_attachments"
INBOUND_MAIL_THREADS = "inbound_mail_threads"  # `_id` = ticket id: the mail it came from, its replies' ids
MAX_THREAD_MAILS = 200  # reply mails a ticket's thread lists (retention still reaches any beyond)
ATTACHMENT_CHUNK_BYTES = 255 * 1024  # well below MongoDB's 16 MB document limit, and FerretDB's comfort
HIDDEN = {"outbox": 0}
MAIL_HIDDEN = {"outbox": 0, "sender": 0}  # a mail as staff read it: no address

INDEXES = [
    IndexSpec(DELIVERIES, [("cause_event_id", 1)]),
    IndexSpec(DELIVERIES, [("ticket_id", 1), ("created_at", 1)]),
]


# ---------------------------------------------------------------- recipients


def recipient_from(doc: Mapping[str, Any]) -> Recipient:
    dnd = doc.get("do_not_disturb") or {}
    return Recipient(
        id=doc["_id"],
        kind=RecipientKind(doc["kind"]),
        channels=tuple(ChannelName(c) for c in doc.get("channels", [])),
        language=Language(doc.get("language", Language.ZH.value)),
        email=doc.get("email"),
        phone=doc.get("phone"),
        robots={
            ChannelName(name): Robot(r["url"], r.get("secret"))
            for name, r in (doc.get("robots") or {}).items()
        },
        timezone=doc.get("timezone", "Asia/Shanghai"),
        do_not_disturb=do_not_disturb(_time(dnd.get("start")), _time(dnd.get("end"))),
        registered_by=doc.get("registered_by"),
    )


def _time(text: str | None) -> time | None:
    return None if text is None else time.fromisoformat(text)


def recipient_document(recipient: Recipient) -> dict[str, Any]:
    """The stored form: only the contact points the recipient's channels need."""
    dnd = recipient.do_not_disturb
    return {
        "kind": recipient.kind.value,
        "channels": [c.value for c in recipient.channels],
        "language": recipient.language.value,
        "email": recipient.email,
        "phone": recipient.phone,
        "robots": {c.value: {"url": r.url, "secret": r.secret} for c, r in recipient.robots.items()},
        "timezone": recipient.timezone,
        "do_not_disturb": None
        if dnd is None
        else {"start": dnd.start.isoformat(), "end": dnd.end.isoformat()},
        "registered_by": recipient.registered_by,
    }


class RecipientStore:
    def __init__(self, db: Database) -> None:
        self.recipients = db[RECIPIENTS]
        # `noted(customer_id, at)`: a customer's contact points were stored (retention arms them).
        self.noted: Callable[[str, datetime], Awaitable[None]] | None = None

    async def find(self, recipient_id: str) -> Recipient | None:
        doc = await self.recipients.find_one({"_id": recipient_id})
        return None if doc is None else recipient_from(doc)

    async def put(self, recipient: Recipient) -> bool:
        """Create or replace the recipient; return True when it was new."""
        now = datetime.now(UTC)
        result = await self.recipients.update_one(
            {"_id": recipient.id},
            {
                "$set": {**recipient_document(recipient), "updated_at": now},
                "$setOnInsert": {"created_at": now},
            },
            upsert=True,
        )
        await self._stored(recipient, now)
        return result.upserted_id is not None

    async def add(self, recipient: Recipient) -> bool:
        """Store the recipient unless it is known already (one conditional write: contact points a
        channel registered are never replaced); return True when it was new."""
        now = datetime.now(UTC)
        result = await self.recipients.update_one(
            {"_id": recipient.id},
            {"$setOnInsert": {**recipient_document(recipient), "updated_at": now, "created_at": now}},
            upsert=True,
        )
        if result.upserted_id is None:
            return False
        await self._stored(recipient, now)
        return True

    async def _stored(self, recipient: Recipient, at: datetime) -> None:
        """A customer's contact points were stored at `at`: tell retention (`noted`)."""
        if recipient.kind == RecipientKind.CUSTOMER and self.noted is not None:
            await self.noted(recipient.id.removeprefix(f"{RecipientKind.CUSTOMER.value}:"), at)

    async def delete(self, recipient_id: str, *, active_until: datetime | None = None) -> bool:
        """Forget the recipient's contact points; True when it had any. With `active_until` (retention),
        only a recipient not stored again since then (one guarded delete)."""
        guard: dict[str, Any] = {"_id": recipient_id}
        if active_until is not None:
            guard["updated_at"] = {"$lte": active_until}
        return (await self.recipients.delete_one(guard)).deleted_count == 1

    async def stored_at(self, recipient_id: str) -> datetime | None:
        """Return when the recipient's contact points were last stored; None when there are none."""
        doc = await self.recipients.find_one({"_id": recipient_id}, {"updated_at": 1})
        return None if doc is None else doc.get("updated_at") or datetime.min.replace(tzinfo=UTC)


# ---------------------------------------------------------------- ticket facts


class TicketStore:
    """Whose each ticket is and where it is worked, from intake's and routing's events."""

    def __init__(self, db: Database) -> None:
        self.tickets = db[TICKETS]

    async def remember(self, ticket_id: str, **fields: str) -> None:
        """Set the given facts (idempotent: the same event sets the same values again)."""
        await self.tickets.update_one(
            {"_id": ticket_id}, {"$set": {**fields, "updated_at": datetime.now(UTC)}}, upsert=True
        )

    async def find(self, ticket_id: str | None) -> TicketCopy | None:
        if ticket_id is None:
            return None
        doc = await self.tickets.find_one({"_id": ticket_id})
        if doc is None:
            return None
        return TicketCopy(ticket_id, customer_id=doc.get("customer_id"), grid_id=doc.get("grid_id"))


# ---------------------------------------------------------------- templates


class TemplateStore:
    """Administrators' edits of the shipped templates, by `<key>:<language>`."""

    def __init__(self, db: Database) -> None:
        self.templates = db[TEMPLATES]

    async def find(self, key: str, language: Language) -> MessageTemplate | None:
        doc = await self.templates.find_one({"_id": f"{key}:{language.value}"})
        return None if doc is None else MessageTemplate(key, language, doc["subject"], doc["body"])

    async def all(self) -> list[MessageTemplate]:
        cursor = self.templates.find({}, limit=1000)
        return [
            MessageTemplate(d["key"], Language(d["language"]), d["subject"], d["body"]) async for d in cursor
        ]

    async def put(self, template: MessageTemplate, by: str) -> None:
        fields = {
            "key": template.key,
            "language": template.language.value,
            "subject": template.subject,
            "body": template.body,
            "updated_by": by,
            "updated_at": datetime.now(UTC),
        }
        await self.templates.update_one(
            {"_id": f"{template.key}:{template.language.value}"}, {"$set": fields}, upsert=True
        )


# ---------------------------------------------------------------- deliveries


def delivery_from(doc: Mapping[str, Any]) -> Delivery:
    return Delivery(
        id=doc["_id"],
        cause_event_id=doc["cause_event_id"],
        cause_event_type=doc["cause_event_type"],
        ticket_id=doc.get("ticket_id"),
        recipient_id=doc["recipient_id"],
        channel=ChannelName(doc["channel"]),
        template=doc["template"],
        params=doc.get("params", {}),
        status=DeliveryStatus(doc["status"]),
        due_at=doc["due_at"],
        attempts=doc.get("attempts", 0),
        deferred=doc.get("deferred", False),
        language=Language(doc["language"]) if doc.get("language") else None,
        last_error=doc.get("last_error"),
        failure=doc.get("failure"),
    )


def _fields(delivery: Delivery) -> dict[str, Any]:
    return {
        "status": delivery.status.value,
        "due_at": delivery.due_at,
        "attempts": delivery.attempts,
        "language": delivery.language.value if delivery.language else None,
        "last_error": delivery.last_error,
        "failure": delivery.failure,
    }


class DeliveryStore:
    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime
        self.deliveries = runtime.db[DELIVERIES]

    async def create(self, delivery: Delivery) -> bool:
        """Insert a planned delivery and arm its first attempt; False when it exists (a redelivery)."""
        if await self.deliveries.find_one({"_id": delivery.id}, {"_id": 1}) is not None:
            return False
        await self._arm(delivery)
        now = datetime.now(UTC)
        doc = {
            "_id": delivery.id,
            "cause_event_id": delivery.cause_event_id,
            "cause_event_type": delivery.cause_event_type,
            "ticket_id": delivery.ticket_id,
            "recipient_id": delivery.recipient_id,
            "channel": delivery.channel.value,
            "template": delivery.template,
            "params": dict(delivery.params),
            "deferred": delivery.deferred,
            **_fields(delivery),
            "created_at": now,
            "updated_at": now,
        }
        try:
            await self.deliveries.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    async def load(self, delivery_id: str) -> Delivery | None:
        doc = await self.deliveries.find_one({"_id": delivery_id}, HIDDEN)
        return None if doc is None else delivery_from(doc)

    async def write(self, before: Delivery, after: Delivery, models: Sequence[BaseModel]) -> bool:
        """Write an attempt's result and its status event if the delivery is still as `before` was read
        (status and attempt count); False when another firing got there first."""
        if after.status == DeliveryStatus.PENDING:
            await self._arm(after)
        now = datetime.now(UTC)
        events = [
            new_event(m, source=SOURCE, subject=after.ticket_id or after.cause_event_id) for m in models
        ]
        update = with_events({"$set": {**_fields(after), "updated_at": now}}, Topic.NOTIFICATIONS, events)
        guard = {"_id": before.id, "status": before.status.value, "attempts": before.attempts}
        result = await self.deliveries.update_one(guard, update)
        if result.modified_count != 1:
            return False
        if events:
            self.runtime.relay.notify(DELIVERIES, before.id)
        return True

    async def find(self, equal_to: Mapping[str, str | None], limit: int) -> list[dict[str, Any]]:
        """Return delivery documents whose fields equal the given values (None: any), oldest first."""
        query = {name: value for name, value in equal_to.items() if value is not None}
        cursor = self.deliveries.find(query, HIDDEN, sort=[("created_at", 1)], limit=limit)
        return [doc async for doc in cursor]

    async def _arm(self, delivery: Delivery) -> None:
        payload = {"delivery_id": delivery.id, "attempt": delivery.attempts + 1}
        await self.runtime.timers.schedule(
            delivery.timer_id, ATTEMPT_DUE, delivery.due_at, payload, group=delivery.id
        )

    async def wait_for_contact(
        self, notice: Notice, cause: Mapping[str, str | None], round_: int, at: datetime
    ) -> None:
        """Arm the timer that looks for a customer's contact points again (idempotent by id)."""
        payload = {
            "template": notice.template,
            "recipient_id": notice.recipient_id,
            "params": dict(notice.params),
            **cause,
            "round": round_,
        }
        timer_id = f"{cause['cause_event_id']}|{notice.recipient_id}:contact:{round_}"
        await self.runtime.timers.schedule(timer_id, CONTACT_WAIT, at, payload)


# ---------------------------------------------------------------- inbound mail


class InboundMailStore:
    """Received mails, by the hash of their Message-ID: what became of each (a request or a reply to a
    ticket, and which ticket) and its attachments' metadata, the command for intake in its outbox; the
    attachments' content in chunk documents `<attachment id>:<n>`. A request's sender address is kept
    on its record (`sender`, never shown by the API) until its ticket is opened, for the acknowledgement
    and as the customer's contact point; no other address is kept outside the outbox. A ticket's thread
    (by ticket id) names the mail it came from and its reply mails, so an erasure finds them by `_id`."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime
        self.mails = runtime.db[INBOUND_MAIL]
        self.chunks = runtime.db[INBOUND_ATTACHMENTS]
        self.threads = runtime.db[INBOUND_MAIL_THREADS]
        # `noted(mail_id, at)`: a mail is about to be recorded, received at `at` (retention arms it).
        self.noted: Callable[[str, datetime], Awaitable[None]] | None = None

    async def seen(self, mail_id: str) -> bool:
        return await self.mails.find_one({"_id": mail_id}, {"_id": 1}) is not None

    async def put_content(self, attachment_id: str, content: bytes) -> int:
        """Store an attachment's content (idempotent: the same id rewrites the same chunks); return the
        number of chunks."""
        pieces = [
            content[i : i + ATTACHMENT_CHUNK_BYTES] for i in range(0, len(content), ATTACHMENT_CHUNK_BYTES)
        ]
        for n, piece in enumerate(pieces):
            await self.chunks.update_one(
                {"_id": f"{attachment_id}:{n}"}, {"$set": {"data": piece, "n": n}}, upsert=True
            )
        return len(pieces)

    async def accept(self, mail_id: str, record: Mapping[str, Any], event: CloudEvent) -> bool:
        """Record a received mail with its command in the outbox (one write); False when it was recorded
        before (the same mail delivered again). A reply is listed on its ticket's thread and the mail
        armed for retention first, so a recorded mail is always reachable by erasure and retention."""
        if record["kind"] == "reply":
            await self._list_reply(str(record["ticket_id"]), mail_id)
        else:  # the ticket it becomes: the acknowledgement finds its sender by the ticket's id
            await self.threads.update_one(
                {"_id": record["ticket_id"]}, {"$set": {"request_mail_id": mail_id}}, upsert=True
            )
        if self.noted is not None:
            await self.noted(mail_id, record["received_at"])
        doc = new_with_events({"_id": mail_id, **record}, Topic.REQUESTS, [event])
        try:
            await self.mails.insert_one(doc)
        except DuplicateKeyError:
            return False
        self.runtime.relay.notify(INBOUND_MAIL, mail_id)
        return True

    async def find(self, mail_id: str) -> dict[str, Any] | None:
        return await self.mails.find_one({"_id": mail_id}, MAIL_HIDDEN)

    async def sender_of(self, ticket_id: str) -> dict[str, Any] | None:
        """Return who wrote the mail a ticket was opened from (`email`, `name`, `language`, and the
        mail's `mail_id`); None when the ticket came from elsewhere or the mail's content is erased. Two
        reads by `_id`."""
        thread = await self.threads.find_one({"_id": ticket_id}, {"request_mail_id": 1})
        if thread is None or not thread.get("request_mail_id"):
            return None
        mail_id = str(thread["request_mail_id"])
        mail = await self.mails.find_one({"_id": mail_id}, {"sender": 1})
        sender = (mail or {}).get("sender")
        return {**sender, "mail_id": mail_id} if sender else None

    async def forget_sender(self, mail_id: str) -> None:
        """Drop a request mail's sender address once its ticket's customer has it as contact point."""
        await self.mails.update_one({"_id": mail_id}, {"$unset": {"sender": ""}})

    async def content(self, attachment_id: str, chunks: int) -> bytes:
        """Return an attachment's content, from its chunks (by `_id`)."""
        parts = []
        for n in range(chunks):
            doc = await self.chunks.find_one({"_id": f"{attachment_id}:{n}"})
            if doc is None:
                raise LookupError(f"chunk {n} of attachment {attachment_id} is missing")
            parts.append(bytes(doc["data"]))
        return b"".join(parts)

    async def _list_reply(self, ticket_id: str, mail_id: str) -> None:
        """Add a reply mail to its ticket's thread (idempotent); a full thread lists no more."""
        thread = await self.threads.find_one({"_id": ticket_id}, {"mail_ids": 1})
        listed = (thread or {}).get("mail_ids") or []
        if mail_id in listed or len(listed) >= MAX_THREAD_MAILS:
            return
        await self.threads.update_one({"_id": ticket_id}, {"$addToSet": {"mail_ids": mail_id}}, upsert=True)

    async def thread(self, ticket_id: str) -> list[str]:
        """Return the ids of the mails on a ticket's thread: the one it was opened from, the replies."""
        thread = await self.threads.find_one({"_id": ticket_id}, {"mail_ids": 1, "request_mail_id": 1})
        opened = [str(thread["request_mail_id"])] if thread and thread.get("request_mail_id") else []
        return opened + [str(m) for m in (thread or {}).get("mail_ids") or []]

    async def forget_thread(self, ticket_id: str) -> None:
        await self.threads.delete_one({"_id": ticket_id})

    async def received_at(self, mail_id: str) -> datetime | None:
        """Return when a mail whose content is still kept was received; None when gone or erased."""
        doc = await self.mails.find_one({"_id": mail_id}, {"received_at": 1, "erased_at": 1})
        return None if doc is None or doc.get("erased_at") else doc.get("received_at")

    async def erase(self, mail_id: str) -> bool:
        """Delete a mail's personal content: its attachments' chunks, their names and fingerprints, and
        a command for intake not yet published (it carries the sender's address and text), and the
        sender's address kept for the acknowledgement; the record stays as a tombstone (kind, ticket,
        times, content types and sizes), so the same mail delivered again is still a duplicate. True
        when there was content to erase (idempotent)."""
        doc = await self.mails.find_one({"_id": mail_id}, {"attachments": 1, "erased_at": 1})
        if doc is None or doc.get("erased_at"):
            return False
        entries = doc.get("attachments") or []
        for entry in entries:
            for n in range(int(entry.get("chunks", 0))):
                await self.chunks.delete_one({"_id": f"{entry['id']}:{n}"})
        kept = ("id", "content_type", "size_bytes", "refused")
        listing = [{k: e[k] for k in kept if k in e} for e in entries]
        result = await self.mails.update_one(
            {"_id": mail_id, "erased_at": {"$exists": False}},
            {
                "$set": {"attachments": listing, "erased_at": datetime.now(UTC)},
                "$unset": {"outbox": "", "sender": ""},
            },
        )
        return result.modified_count == 1
