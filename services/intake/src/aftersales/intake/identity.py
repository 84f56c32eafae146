"""Who and what a request is: ticket ids (keyed ones, so a replay collides), idempotency keys scoped to
their caller, customer ids (keyed with the platform's secret) and request fingerprints. Pure functions."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid

from aftersales.shared.contracts.requests import CustomerIn, TicketRequest
from aftersales.shared.errors import InvalidRequest


def new_ticket_id() -> str:
    """Return a fresh ticket id for a request without an idempotency key."""
    return f"T-{uuid.uuid4().hex[:20]}"


def dedupe_key(namespace: str, key: str) -> str:
    """Return the stored form of an idempotency key, scoped to its caller."""
    return _digest(f"{namespace}|{key}")[:32]


def customer_id_for(customer: CustomerIn, key: bytes) -> str:
    """Return the customer's id: the given one, else a stable id keyed with `key` (HMAC-SHA256) from the
    normalized e-mail or phone, so nobody without the key can compute a customer's id from a phone."""
    if customer.id is not None:
        return customer.id
    return _keyed(_identity(customer), key)


def contact_customer_ids(*, email: str | None, phone: str | None, key: bytes) -> set[str]:
    """Return the ids of the customers this e-mail and phone identify (a reply's sender is a ticket's
    customer when the ticket's customer id is among them)."""
    identities = [f"email:{email.strip().lower()}"] if email else []
    identities += [f"phone:{phone}"] if phone else []
    return {_keyed(identity, key) for identity in identities}


def _keyed(identity: str, key: bytes) -> str:
    return f"C-{hmac.new(key, identity.encode(), hashlib.sha256).hexdigest()[:20]}"


def legacy_customer_id(customer: CustomerIn) -> str:
    """Return the id the platform used before ids were keyed (plain SHA-256), for the one-off re-keying."""
    return f"C-{_digest(_identity(customer))[:16]}"


def _identity(customer: CustomerIn) -> str:
    if customer.email is not None:
        return f"email:{customer.email.strip().lower()}"
    if customer.phone is not None:
        return f"phone:{customer.phone}"  # already E.164-normalized by the request model
    # the request model refuses this; keep the function total
    raise InvalidRequest("a new customer needs a phone or an e-mail", field="customer")


def request_fingerprint(request: TicketRequest) -> str:
    """Return a hash of a request's content, to tell a true replay from a reused idempotency key."""
    body = request.model_dump(mode="json", exclude={"idempotency_key"})
    return _digest(json.dumps(body, sort_keys=True, separators=(",", ":")))[:32]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
