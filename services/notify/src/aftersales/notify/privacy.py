"""Personal-data rights in notify (PIPL): a customer's erasure removes the contact points notify keeps for
it (its recipient document, found by `_id` = `customer:<id>`), and a do-not-contact customer gets no
messages (staff, grid and on-call messages are unaffected). Retention (`retention.py`) forgets contact
points not registered again for their period with the same function (`erase_contact`).

Deliveries and their timers name the recipient by id and carry ids and links only, so they stay (the
delivery record is the history of what was sent; without the recipient nothing more can be sent).
"""

from __future__ import annotations

from datetime import datetime

from aftersales.notify.domain import RecipientKind, recipient_id
from aftersales.notify.store import RecipientStore
from aftersales.shared.contracts.privacy import ContactPreferencesChanged, ErasureRequested
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.privacy import ContactPreferenceStore, ErasureLedger


class PersonalData:
    """Erasure of customers' contact points, and their contact preferences."""

    def __init__(
        self, *, recipients: RecipientStore, ledger: ErasureLedger, preferences: ContactPreferenceStore
    ) -> None:
        self.recipients = recipients
        self.ledger = ledger
        self.preferences = preferences

    async def on_erasure_requested(self, request: ErasureRequested, _: CloudEvent) -> None:
        async def erase() -> dict[str, int]:
            if request.chunk != 0:  # notify keeps nothing by ticket: the first chunk does it all
                return {}
            return {"recipients": int(await self.erase_contact(request.customer_id))}

        await self.ledger.apply(request, erase)

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
