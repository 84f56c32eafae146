"""One-off migration to keyed customer ids: `python -m aftersales.intake.rekey [--apply]`.

Customer ids derived from a phone or e-mail used to be a plain SHA-256 (computable by anyone); they are
now an HMAC with CUSTOMER_ID_KEY. This moves every customer whose id is the old derivation of its stored
e-mail or phone to its keyed id: the record is merged into the new id (its channel links kept), its
tickets point at the new id, the old record is removed. Run it once with the intake service's environment,
intake stopped; without `--apply` it only counts. It is idempotent. Events already published keep the old
ids, so other services' copies (follow-up care visits, metrics facts) keep them for those tickets.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from pymongo import AsyncMongoClient

from aftersales.intake import identity
from aftersales.intake.app import Settings
from aftersales.intake.store import legacy_customers, move_customer
from aftersales.shared.contracts.requests import CustomerIn


def keyed_id_of(record: dict[str, Any], key: bytes) -> str | None:
    """Return the keyed id a record should have, or None when it is not an old derived id."""
    if not (record.get("email") or record.get("phone")):
        return None
    customer = CustomerIn.model_construct(
        id=None, email=record.get("email"), phone=record.get("phone"), region_code=""
    )
    if record["_id"] != identity.legacy_customer_id(customer):
        return None  # an id a gateway chose, or already keyed
    return identity.customer_id_for(customer, key)


async def rekey(settings: Settings, *, apply: bool) -> int:
    """Return how many customers were (or, without `apply`, would be) moved to their keyed id."""
    key = settings.customer_id_key.get_secret_value().encode()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.mongodb_uri.get_secret_value(), tz_aware=True
    )
    moved = 0
    try:
        db = client[settings.database_name]
        async for record in legacy_customers(db):
            new_id = keyed_id_of(record, key)
            if new_id is None:
                continue
            moved += 1
            if apply:
                await move_customer(db, record, new_id)
    finally:
        await client.close()
    return moved


def main() -> None:
    apply = "--apply" in sys.argv[1:]
    count = asyncio.run(rekey(Settings(), apply=apply))
    print(f"{count} customer(s) {'moved' if apply else 'to move (run with --apply)'} to keyed ids")


if __name__ == "__main__":
    main()
