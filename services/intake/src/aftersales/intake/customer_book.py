"""Customers as records: create, edit and list them, their products, their change log. A channel creates
(or, knowing the phone or e-mail, links itself to) a customer and fills only empty fields; staff edit any
field and set the tier. Every change is on the record's bounded change log (`customer_records`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aftersales.intake import domain, identity
from aftersales.intake.customer_records import CustomerRecords, RecordChange
from aftersales.intake.customers import PROFILE_FIELDS, CustomerNote, new_record
from aftersales.shared.contracts.common import CustomerTier
from aftersales.shared.contracts.requests import CustomerIn, ProductIn
from aftersales.shared.errors import Conflict, InvalidRequest, NotFound


@dataclass(frozen=True, slots=True)
class Profile:
    """Profile fields given to create or edit a record (None: not given), and a tier (staff only)."""

    fields: Mapping[str, Any]
    tier: CustomerTier | None = None


class CustomerBook:
    def __init__(self, records: CustomerRecords, *, customer_id_key: bytes) -> None:
        self.records = records
        self.customer_id_key = customer_id_key

    async def create(
        self, profile: Profile, products: list[ProductIn], *, caller: str, staff: bool
    ) -> tuple[dict[str, Any], bool]:
        """Create a customer identified by its phone or e-mail; return the record and whether it is new.
        A channel naming a known customer links itself to it and fills its empty fields; staff get a
        409 (edit it instead)."""
        given = {k: v for k, v in profile.fields.items() if v is not None}
        if not given.get("phone") and not given.get("email"):
            raise InvalidRequest("a customer needs a phone or an e-mail", field="phone")
        customer = CustomerIn.model_validate({**given, "name": given.get("name") or "-"})
        customer_id = identity.customer_id_for(customer, self.customer_id_key)
        now = datetime.now(UTC)
        note = CustomerNote(
            customer_id=customer_id,
            ticket_id="",
            product={},
            profile=given,
            staff=staff,
            stated_tier=profile.tier if staff else None,
            channel=None if staff else caller,
            at=now,
            by=caller,
        )
        created = await self.records.create(new_record(note))
        if not created and staff:
            field = "email" if given.get("email") else "phone"
            raise Conflict(f"customer {customer_id} exists; edit it with PATCH", field=field)
        if not created:
            await self.records.fill(note)
        for product in products:
            await self.add_product(customer_id, product, by=caller, at=now)
        record = await self.records.get(customer_id)
        if record is None:
            raise NotFound(f"customer {customer_id} not found")
        return record, created

    async def edit(
        self, customer_id: str, profile: Profile, *, by: str, expected_version: int | None
    ) -> dict[str, Any]:
        """Set the given fields (and tier) of a record, staff only; nothing when nothing differs."""
        now = datetime.now(UTC)
        sets = {k: v for k, v in profile.fields.items() if v is not None and k in PROFILE_FIELDS}
        if profile.tier is not None:
            sets["tier"] = profile.tier.value

        def decide(record: Mapping[str, Any]) -> RecordChange | None:
            changed = {k: v for k, v in sets.items() if record.get(k) != v}
            if not changed:
                return None
            return RecordChange("tier_set" if set(changed) == {"tier"} else "edited", by, now, changed)

        record = await self.records.change(customer_id, decide, expected_version=expected_version)
        if record is None:
            raise NotFound(f"customer {customer_id} not found")
        return record

    async def add_product(self, customer_id: str, product: ProductIn, *, by: str, at: datetime) -> None:
        """Add a product (a serial) to a record, on its change log."""
        stored = {k: v for k, v in domain.product_document(product).items() if k != "warranty_months"}

        def decide(_: Mapping[str, Any]) -> RecordChange:
            return RecordChange("product_added", by, at, {}, logged=["products"])

        if await self.records.get(customer_id) is None:
            raise NotFound(f"customer {customer_id} not found")
        await self.records.put_product(customer_id, stored, at=at)
        await self.records.change(customer_id, decide)
