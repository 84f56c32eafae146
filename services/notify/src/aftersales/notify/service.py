"""Notify's use cases: events become notices, notices become deliveries (one per recipient and channel),
and each delivery's attempts run from durable timers until it is sent or has failed for good.

The edges (api.py, consumers.py, timers.py) call these; the rules come from domain.py and notices.py,
the writes from store.py.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

from pydantic import ValidationError

from aftersales.notify import domain, inbound, messages, notices
from aftersales.notify.channels import ChannelAdapter, Outgoing, Refused, Transient
from aftersales.notify.domain import (
    ChannelName,
    Delivery,
    DeliveryStatus,
    Language,
    Notice,
    Outcome,
    Recipient,
    RecipientKind,
    RetryPolicy,
)
from aftersales.notify.inbound import InboundMail, UnreadableMail
from aftersales.notify.metrics import (
    ATTEMPTS,
    DEFERRED,
    DELIVERIES_DONE,
    DELIVERIES_PLANNED,
    INBOUND_MAILS,
    SUPPRESSED,
    UNADDRESSED,
)
from aftersales.notify.privacy import may_message
from aftersales.notify.store import (
    SOURCE,
    DeliveryStore,
    InboundMailStore,
    RecipientStore,
    TemplateStore,
    TicketStore,
)
from aftersales.notify.templates import DEFAULTS, MessageTemplate, checked
from aftersales.shared.calendar import DoNotDisturb
from aftersales.shared.contracts.common import Channel
from aftersales.shared.contracts.events import (
    ComplaintClosed,
    ComplaintOpened,
    ComplaintUpdated,
    SlaBreached,
    SlaWarning,
    SurveySent,
    TicketCreated,
    TicketReopened,
    WorkOrderAssigned,
    WorkOrderEscalated,
    WorkOrderReassigned,
)
from aftersales.shared.contracts.requests import requested_ticket_id
from aftersales.shared.envelope import CloudEvent, new_event
from aftersales.shared.errors import NotFound, RetryLater
from aftersales.shared.privacy import ContactPreferenceStore
from aftersales.shared.timers import NOT_WRITTEN_RETRIES, Timer

log = logging.getLogger("aftersales.notify")
# Who registered a customer whose contact point is the address their mail came from.
MAIL_SENDER = "inbound-mail"


@dataclass(frozen=True, slots=True)
class NotifyPolicy:
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    contact_wait: timedelta = timedelta(seconds=30)  # between looks for a customer's contact points
    contact_wait_rounds: int = 10  # then the message is given up as unaddressed
    survey_link_template: str = "https://survey.example.com/s/{survey_id}"


class Notifications:
    """Who is told what, on which channel, and when."""

    def __init__(
        self,
        *,
        recipients: RecipientStore,
        tickets: TicketStore,
        templates: Catalogue,
        deliveries: DeliveryStore,
        channels: Mapping[ChannelName, ChannelAdapter],
        policy: NotifyPolicy,
        preferences: ContactPreferenceStore | None = None,
    ) -> None:
        self.preferences = preferences  # customers' do-not-contact flags
        self.recipients = recipients
        self.tickets = tickets
        self.templates = templates
        self.deliveries = deliveries
        self.channels = dict(channels)
        self.policy = policy

    # ------------------------------------------------------------------ events (consumers.py)

    async def on_ticket_created(self, created: TicketCreated, event: CloudEvent) -> None:
        await self.tickets.remember(created.ticket_id, customer_id=created.customer_id)
        await self.notify(notices.acknowledgement(created), event, created.ticket_id)

    async def on_ticket_reopened(self, reopened: TicketReopened, _: CloudEvent) -> None:
        await self.tickets.remember(reopened.ticket_id, customer_id=reopened.customer_id)

    async def on_assigned(self, assigned: WorkOrderAssigned | WorkOrderReassigned, event: CloudEvent) -> None:
        await self.tickets.remember(assigned.ticket_id, grid_id=assigned.grid_id)
        await self.notify(notices.new_assignment(assigned), event, assigned.ticket_id)

    async def on_sla_warning(self, warning: SlaWarning, event: CloudEvent) -> None:
        await self.notify(notices.sla_warning(warning), event, warning.ticket_id)

    async def on_sla_breached(self, breach: SlaBreached, event: CloudEvent) -> None:
        await self.notify(notices.sla_breached(breach), event, breach.ticket_id)

    async def on_escalated(self, escalated: WorkOrderEscalated, event: CloudEvent) -> None:
        await self.notify(notices.escalation(escalated), event, escalated.ticket_id)

    async def on_survey_sent(self, sent: SurveySent, event: CloudEvent) -> None:
        # The signed link feedback put in the event; the template only for events of older feedback releases.
        link = sent.link or self.policy.survey_link_template.format(
            survey_id=sent.survey_id, ticket_id=sent.ticket_id
        )
        ticket = await self.tickets.find(sent.ticket_id)
        await self.notify(notices.survey_invitation(sent, ticket, link), event, sent.ticket_id)

    async def on_complaint(
        self, complaint: ComplaintOpened | ComplaintUpdated | ComplaintClosed, event: CloudEvent
    ) -> None:
        ticket = await self.tickets.find(complaint.ticket_id)
        found = notices.complaint_progress(complaint, ticket)
        if isinstance(complaint, ComplaintUpdated):
            found += notices.complaint_overdue(complaint, ticket)
        await self.notify(found, event, complaint.ticket_id)

    # ------------------------------------------------------------------ planning

    async def notify(self, found: Sequence[Notice], event: CloudEvent, ticket_id: str | None) -> None:
        """Plan the deliveries of an event's notices (a redelivered event finds them planned)."""
        cause = {"cause_event_id": event.id, "cause_event_type": event.type, "ticket_id": ticket_id}
        for notice in found:
            await self.plan(notice, cause, round_=0)

    async def plan(self, notice: Notice, cause: Mapping[str, str | None], *, round_: int) -> int:
        """Plan one notice's deliveries; return how many were new (none for a do-not-contact customer)."""
        if not await may_message(self.preferences, notice.recipient_id):
            SUPPRESSED.labels(notice.template).inc()
            return 0
        recipient = await self.recipients.find(notice.recipient_id)
        if recipient is None:
            await self._unaddressed(notice, cause, round_)
            return 0
        planned = domain.plan_deliveries(
            notice,
            recipient,
            cause_event_id=str(cause["cause_event_id"]),
            cause_event_type=str(cause["cause_event_type"]),
            ticket_id=cause.get("ticket_id"),
            now=datetime.now(UTC),
        )
        new = 0
        for delivery in planned:
            if await self.deliveries.create(delivery):
                new += 1
                DELIVERIES_PLANNED.labels(delivery.channel.value).inc()
                if delivery.deferred:
                    DEFERRED.inc()
        return new

    async def _unaddressed(self, notice: Notice, cause: Mapping[str, str | None], round_: int) -> None:
        customer = notice.recipient_id.startswith(f"{RecipientKind.CUSTOMER.value}:")
        if customer and round_ < self.policy.contact_wait_rounds:
            at = datetime.now(UTC) + self.policy.contact_wait
            await self.deliveries.wait_for_contact(notice, cause, round_ + 1, at)
            return
        UNADDRESSED.labels(notice.template).inc()
        log.warning(
            "nobody to send a message to",
            extra={
                "template": notice.template,
                "recipient": notice.recipient_id,
                "ticket_id": cause["ticket_id"],
            },
        )

    # ------------------------------------------------------------------ timers (timers.py)

    async def on_contact_wait(self, timer: Timer) -> None:
        payload = timer.payload
        notice = Notice(str(payload["template"]), str(payload["recipient_id"]), dict(payload["params"]))
        cause = {k: payload.get(k) for k in ("cause_event_id", "cause_event_type", "ticket_id")}
        await self.plan(notice, cause, round_=int(payload["round"]))

    async def on_attempt_due(self, timer: Timer) -> None:
        delivery = await self.deliveries.load(str(timer.payload["delivery_id"]))
        if delivery is None:
            if timer.attempts < NOT_WRITTEN_RETRIES:
                raise RetryLater(f"delivery {timer.payload['delivery_id']} not written yet")
            return
        if delivery.status != DeliveryStatus.PENDING or delivery.attempts + 1 != int(
            timer.payload["attempt"]
        ):
            return  # this attempt was made already (a timer can fire twice)
        await self.attempt(delivery)

    async def attempt(self, delivery: Delivery) -> Delivery:
        """Send one attempt of a pending delivery and record its outcome; return the delivery after it."""
        recipient = await self.recipients.find(delivery.recipient_id)
        now = datetime.now(UTC)
        if recipient is not None and not await may_message(self.preferences, delivery.recipient_id):
            after = domain.after_attempt(
                self.policy.retry, delivery, Outcome.REFUSED, "do_not_contact", recipient.language, now
            )
        elif recipient is None or not recipient.has_address(delivery.channel):
            language = recipient.language if recipient else Language.ZH
            after = domain.without_address(delivery, language)
        else:
            outcome, error = await self._send(delivery, recipient)
            ATTEMPTS.labels(delivery.channel.value, outcome.value).inc()
            after = domain.after_attempt(self.policy.retry, delivery, outcome, error, recipient.language, now)
        if not await self.deliveries.write(delivery, after, messages.for_status(after, now)):
            log.info("delivery changed meanwhile", extra={"ticket_id": delivery.ticket_id})
            return delivery
        if after.status != DeliveryStatus.PENDING:
            DELIVERIES_DONE.labels(after.channel.value, after.status.value).inc()
        return after

    async def _send(self, delivery: Delivery, recipient: Recipient) -> tuple[Outcome, str | None]:
        adapter = self.channels.get(delivery.channel)
        if adapter is None:
            return Outcome.REFUSED, f"{delivery.channel.value}_not_configured"
        template = await self.templates.get(delivery.template, recipient.language)
        local = notices.localized(delivery.params, recipient.timezone)  # a visit's window: their time
        message = Outgoing(delivery.id, delivery.template, local, template.render(local), delivery.ticket_id)
        try:
            await adapter.send(recipient, message)
        except Transient as exc:
            log.warning(
                "send failed; will retry",
                extra={"channel": delivery.channel.value, "error": exc.kind, "ticket_id": delivery.ticket_id},
            )
            return Outcome.TRANSIENT, exc.kind
        except Refused as exc:
            log.warning(
                "send refused",
                extra={"channel": delivery.channel.value, "error": exc.kind, "ticket_id": delivery.ticket_id},
            )
            return Outcome.REFUSED, exc.kind
        return Outcome.SENT, None

    # ------------------------------------------------------------------ reads and edits (api.py)

    async def recipient(self, recipient_id: str) -> Recipient:
        """Return the recipient; 404 when there is none."""
        found = await self.recipients.find(recipient_id)
        if found is None:
            raise NotFound(f"recipient {recipient_id} not found")
        return found

    async def find_recipient(self, recipient_id: str) -> Recipient | None:
        return await self.recipients.find(recipient_id)

    async def put_recipient(self, recipient: Recipient) -> bool:
        """Create or replace a recipient; return True when it is new."""
        return await self.recipients.put(recipient)

    async def remove_recipient(self, recipient_id: str) -> bool:
        """Forget a recipient's contact points; later messages to it fail as `no_address`."""
        return await self.recipients.delete(recipient_id)

    async def deliveries_of(self, equal_to: Mapping[str, str | None], limit: int) -> list[dict[str, Any]]:
        """Return the deliveries matching the given fields (an event's or a ticket's)."""
        return await self.deliveries.find(equal_to, limit)


class Catalogue:
    """The message templates in force: the shipped defaults (zh, en), overridden by administrators' edits."""

    def __init__(self, store: TemplateStore) -> None:
        self.store = store

    async def get(self, key: str, language: Language) -> MessageTemplate:
        """Return the template in force: an administrator's edit, else the shipped default."""
        edited = await self.store.find(key, language)
        if edited is not None:
            return edited
        try:
            return DEFAULTS[language][key]
        except KeyError:
            raise NotFound(f"template {key} ({language.value}) not found") from None

    async def all(self) -> list[MessageTemplate]:
        """Return every template in force, shipped defaults overridden by edits."""
        table = {(t.key, t.language): t for lang in DEFAULTS.values() for t in lang.values()}
        table.update({(t.key, t.language): t for t in await self.store.all()})
        return sorted(table.values(), key=lambda t: (t.key, t.language.value))

    async def put(self, key: str, language: Language, subject: str, body: str, *, by: str) -> MessageTemplate:
        """Store an administrator's edit of a template (checked: known key and parameters); return it."""
        template = checked(key, language, subject, body)
        await self.store.put(template, by)
        return template


@dataclass(frozen=True, slots=True)
class InboxPolicy:
    domains: tuple[str, ...]  # the platform's mail domains (the gateway refuses mail for any other)
    region_code: str = "000000"  # the region of a customer who writes in by mail (a mail has no address)
    attachment_types: tuple[str, ...] = ("image/", "video/", "application/pdf", "text/plain")
    max_attachments: int = 10
    # A customer who wrote in by mail is answered by mail, with these local quiet hours (None: none).
    sender_quiet: DoNotDisturb | None = field(default_factory=lambda: DoNotDisturb(time(21), time(9)))


class Inbox:
    """Mail delivered to the platform: a customer's new mail becomes a request to intake, a reply on a
    ticket's thread that customer's reply on the ticket. Each is recorded with its command in one write
    before the gateway says 250, keyed by its Message-ID, so a mail delivered twice is one request."""

    def __init__(self, *, store: InboundMailStore, policy: InboxPolicy, recipients: RecipientStore) -> None:
        self.store = store
        self.policy = policy
        self.recipients = recipients

    async def on_ticket_created(self, created: TicketCreated) -> None:
        """A ticket opened from a mail received here: its sender becomes the customer's contact point (by
        mail, unless a channel registered the customer's own), so the acknowledgement, the survey link
        and complaint progress reach them; the address then lives in the recipient alone."""
        if created.channel != Channel.EMAIL:
            return
        sender = await self.store.sender_of(created.ticket_id)
        if sender is None:
            return
        recipient = Recipient(
            id=domain.recipient_id(RecipientKind.CUSTOMER, created.customer_id),
            kind=RecipientKind.CUSTOMER,
            channels=(ChannelName.EMAIL,),
            language=Language(sender.get("language") or Language.ZH),
            email=str(sender["email"]),
            timezone=created.customer_timezone,
            do_not_disturb=self.policy.sender_quiet,
            registered_by=MAIL_SENDER,
        )
        await self.recipients.add(recipient)
        await self.store.forget_sender(str(sender["mail_id"]))

    async def receive(self, raw: bytes) -> str:
        """Return what a delivered mail became: `request`, `reply`, `duplicate` or `ignored` (an
        auto-reply); UnreadableMail when it cannot be a customer's (no sender, a field out of bounds)."""
        mail = inbound.read_mail(raw, own_domains=self.policy.domains)
        if mail.automatic or mail.sender_email.rsplit("@", 1)[-1].lower() in self.policy.domains:
            outcome = "ignored"  # answering an auto-reply, or the platform's own mail, starts a loop
        elif await self.store.seen(mail.mail_id):
            outcome = "duplicate"
        else:
            outcome = await self._record(mail)
        INBOUND_MAILS.labels(outcome).inc()
        return outcome

    async def _record(self, mail: InboundMail) -> str:
        listing, kept = await self._keep_attachments(mail)
        now = datetime.now(UTC)
        ticket_id = mail.thread_ticket_id
        try:
            if ticket_id is not None:
                command: Any = messages.customer_reply(mail, ticket_id, attachments=kept, now=now)
            else:
                command = messages.ticket_request(mail, region_code=self.policy.region_code, attachments=kept)
        except ValidationError as exc:  # name the fields only: the values may be the sender's address
            fields = sorted({".".join(str(p) for p in e["loc"]) or "mail" for e in exc.errors()})
            raise UnreadableMail(f"not a request the platform can take ({', '.join(fields)})") from None
        event = new_event(command, source=SOURCE, subject=ticket_id or mail.mail_id)
        kind = "reply" if ticket_id is not None else "request"
        record: dict[str, Any] = {
            "kind": kind,
            "ticket_id": ticket_id,
            "received_at": now,
            "attachments": listing,
        }
        if ticket_id is None:  # a new request: the ticket intake opens for it, and whom to answer
            record["ticket_id"] = requested_ticket_id(f"kafka:{SOURCE}", mail.mail_id)
            record["sender"] = {
                "email": mail.sender_email,
                "name": mail.sender_name,
                "language": inbound.language_of(mail).value,
            }
        return kind if await self.store.accept(mail.mail_id, record, event) else "duplicate"

    async def _keep_attachments(self, mail: InboundMail) -> tuple[list[dict[str, Any]], list[str]]:
        """Store the attachments the policy allows; return every one's metadata and the kept names."""
        listing: list[dict[str, Any]] = []
        kept: list[str] = []
        for n, attachment in enumerate(mail.attachments):
            entry: dict[str, Any] = {
                "id": f"{mail.mail_id}.{n}",
                "name": attachment.name,
                "content_type": attachment.content_type,
                "size_bytes": len(attachment.content),
                "sha256": attachment.sha256,
            }
            if n >= self.policy.max_attachments:
                entry["refused"] = "too_many"
            elif not attachment.content_type.startswith(self.policy.attachment_types):
                entry["refused"] = "type"
            else:
                entry["chunks"] = await self.store.put_content(entry["id"], attachment.content)
                kept.append(attachment.name)
            listing.append(entry)
            if n >= self.policy.max_attachments + 20:
                break  # a mail of thousands of tiny parts: the listing stays bounded
        return listing, kept

    async def mail(self, mail_id: str) -> dict[str, Any]:
        """Return a received mail's record (no address in it); 404 when there is none."""
        found = await self.store.find(mail_id)
        if found is None:
            raise NotFound(f"inbound mail {mail_id} not found")
        return found

    async def attachment(self, mail_id: str, n: int) -> tuple[dict[str, Any], bytes]:
        """Return a kept attachment's metadata and content; 404 when there is none."""
        entries = (await self.mail(mail_id))["attachments"]
        if not 0 <= n < len(entries) or "chunks" not in entries[n]:
            raise NotFound(f"attachment {n} of inbound mail {mail_id} not found")
        entry = entries[n]
        return entry, await self.store.content(entry["id"], int(entry["chunks"]))
