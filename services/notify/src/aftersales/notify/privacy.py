"""Personal-data rights in notify (PIPL): a customer's erasure removes the contact points notify keeps for
it (its recipient document, found by `_id` = `customer:<id>`) and the content of the customer's inbound
mails (found by `_id` too: the mails its tickets were opened from, named by the request's `mail_ids`,
and the replies on its tickets' threads, listed by ticket id), and a do-not-contact customer gets no
messages (staff, grid and on-call messages are unaffected). Retention (`retention.py`) forgets contact
points not registered again for their period, and mails older than theirs, with the same functions
(`erase_contact`, `erase_mail`).

Deliveries and their timers name the recipient by id and carry ids and links only, so they stay (the
delivery record is the history of what was sent; without the recipient nothing more can be sent).
"""

from __future__ import annotations

from datetime import datetime

from aftersales.notify.domain import RecipientKind, recipient_id
from aftersales.notify.store import InboundMailStore, RecipientStore
from aftersales.shared.contracts.privacy import ContactPreferencesChanged, ErasureRequested
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.privacy import ContactPreferenceStore, ErasureLedger


class PersonalData:
    """Erasure of customers' contact points, and their contact preferences."""

    def __init__(
        self,
        *,
        recipients: RecipientStore,
        ledger: ErasureLedger,
        preferences: ContactPreferenceStore,
        mails: InboundMailStore,
    ) -> None:
        self.recipients = recipients
        self.ledger = ledger
        self.preferences = preferences
        self.mails = mails

    async def on_erasure_requested(self, request: ErasureRequested, _: CloudEvent) -> None:
        async def erase() -> dict[str, int]:
            counts = {"inbound_mails": await self.erase_mails(request)}
            if request.chunk == 0:  # the contact points are the customer's, not a ticket's
                counts["recipients"] = int(await self.erase_contact(request.customer_id))
            return counts

        await self.ledger.apply(request, erase)

    async def erase_mails(self, request: ErasureRequested) -> int:
        """Erase the content of a chunk's mails: those its tickets were opened from and the replies on
        their threads; return how many had content left."""
        mail_ids = list(request.mail_ids)
        for ticket_id in request.ticket_ids:
            mail_ids += await self.mails.thread(ticket_id)
        erased = sum([await self.erase_mail(mail_id) for mail_id in dict.fromkeys(mail_ids)])
        for ticket_id in request.ticket_ids:
            await self.mails.forget_thread(ticket_id)
        return erased

    async def erase_mail(self, mail_id: str, _active_until: datetime | None = None) -> bool:
        """Erase a received mail's personal content (a mail never changes once recorded, so retention
        needs no guard beyond its received time); True when it had any."""
        return await self.mails.erase(mail_id)

    async def mail_received(self, mail_id: str) -> datetime | None:
        """Return when a mail whose content is kept was received; None when there is none."""
        return await self.mails.received_at(mail_id)

    async def erase_contact(self, customer_id: str, *, active_until: datetime | None = None) -> bool:
        """Forget the customer's contact points (its recipient document); True when there were any. With
        `active_until` (retention), only contact points not registered again since then."""
        return await self.recipients.delete(customer_recipient(customer_id), active_until=active_until)

    async def contact_activity(self, customer_id: str) -> datetime | None:
        """Return when the customer's contact points were last registered; None when there are none."""
        return await self.recipients.stored_at(customer_recipient(customer_id))

    async def on_preferences_changed(self, changed: ContactPreferencesChanged, _: CloudEvent) -> None:
        await self.preferences.remember(changed)


def customer_recipient(customer_id: str) -> str:
    return recipient_id(RecipientKind.CUSTOMER, customer_id)


async def may_message(preferences: ContactPreferenceStore | None, recipient: str) -> bool:
    """False for a customer who asked not to be contacted; staff, grids and on-call always may be."""
    prefix = f"{RecipientKind.CUSTOMER.value}:"
    if preferences is None or not recipient.startswith(prefix):
        return True
    return not (await preferences.of(recipient.removeprefix(prefix))).do_not_contact
