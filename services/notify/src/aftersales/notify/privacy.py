"""Personal-data rights in notify (PIPL): a customer's erasure removes the contact points notify keeps for
it (its recipient document, found by `_id` = `customer:<id>`), and a do-not-contact customer gets no
messages (staff, grid and on-call messages are unaffected).

Deliveries and their timers name the recipient by id and carry ids and links only, so they stay (the
delivery record is the history of what was sent; without the recipient nothing more can be sent).
"""

from __future__ import annotations

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
            removed = await self.recipients.delete(recipient_id(RecipientKind.CUSTOMER, request.customer_id))
            return {"recipients": int(removed)}

        await self.ledger.apply(request, erase)

    async def on_preferences_changed(self, changed: ContactPreferencesChanged, _: CloudEvent) -> None:
        await self.preferences.remember(changed)


async def may_message(preferences: ContactPreferenceStore | None, recipient: str) -> bool:
    """False for a customer who asked not to be contacted; staff, grids and on-call always may be."""
    prefix = f"{RecipientKind.CUSTOMER.value}:"
    if preferences is None or not recipient.startswith(prefix):
        return True
    return not (await preferences.of(recipient.removeprefix(prefix))).do_not_contact
