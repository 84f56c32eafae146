"""Personal-data rights in follow-up (PIPL). Follow-up keeps no contact points: its ticket facts and
visits name the customer by id. What may be personal is the agents' notes on visits (redacted of phone
numbers and e-mail addresses when written, but a note can still name a person or an address): an erasure
removes every note of the customer's visits. The visits are found by `_id` (their ids derive from the
ticket ids the erasure request carries, and from the customer's care counter), never by a query.

Contact preferences (do-not-contact, consent to care calls) are kept from intake's id-only events and
consulted when visits are planned (`FollowUps`).
"""

from __future__ import annotations

from aftersales.followup import domain
from aftersales.followup.store import TicketFactsStore, VisitNotes
from aftersales.shared.contracts.privacy import ContactPreferencesChanged, ErasureRequested
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.privacy import ContactPreferenceStore, ErasureLedger


class PersonalData:
    """Erasure of what follow-up keeps about a customer, and the customer's contact preferences."""

    def __init__(
        self,
        *,
        visits: VisitNotes,
        tickets: TicketFactsStore,
        ledger: ErasureLedger,
        preferences: ContactPreferenceStore,
    ) -> None:
        self.visits = visits
        self.tickets = tickets
        self.ledger = ledger
        self.preferences = preferences

    async def on_erasure_requested(self, request: ErasureRequested, _: CloudEvent) -> None:
        async def erase() -> dict[str, int]:
            # The customer's care visits go with the first chunk; each chunk brings its tickets' visits.
            customer = request.customer_id if request.chunk == 0 else ""
            ids = await self.visits.customer_visit_ids(customer, request.ticket_ids, self.tickets)
            erased = [visit_id for visit_id in ids if await self.visits.erase_notes(visit_id)]
            return {"visit_notes": len(erased)}

        await self.ledger.apply(request, erase)

    async def on_preferences_changed(self, changed: ContactPreferencesChanged, _: CloudEvent) -> None:
        await self.preferences.remember(changed)


async def contactable(
    preferences: ContactPreferenceStore | None, plans: list[domain.VisitPlan], customer_id: str | None
) -> list[domain.VisitPlan]:
    """Return the visit plans the customer's contact preferences allow (all without a preference store)."""
    if preferences is None:
        return plans
    prefs = await preferences.of(customer_id)
    return domain.contactable(plans, do_not_contact=prefs.do_not_contact, care_calls=prefs.care_calls)
