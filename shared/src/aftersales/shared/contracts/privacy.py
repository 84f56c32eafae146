"""Personal-data rights (PIPL 个人信息保护法): erasure requests and their confirmations, and a customer's
contact preferences (`aftersales.privacy.v1`).

Ids and counts only: these events name a customer by id and never carry a phone number, an e-mail
address, a name, an address or a signature. Their key and `ce_subject` are the customer id.
"""

from __future__ import annotations

from pydantic import AwareDatetime, Field

from aftersales.shared.contracts.common import EventData
from aftersales.shared.contracts.registry import event
from aftersales.shared.contracts.topics import Topic

# The services that hold a customer's personal data and confirm its erasure.
PERSONAL_DATA_HOLDERS = ("intake", "followup", "feedback", "notify", "fieldwork")
ERASURE_CHUNK_TICKETS = 200  # ticket ids per erasure-requested event


@event("aftersales.privacy.erasure-requested.v1", Topic.PRIVACY)
class ErasureRequested(EventData):
    """A customer's personal data is to be erased everywhere (one event per chunk of its ticket ids)."""

    erasure_id: str = Field(description="the erasure request; every chunk of one request carries it")
    customer_id: str
    ticket_ids: list[str] = Field(
        default_factory=list,
        max_length=ERASURE_CHUNK_TICKETS,
        description="ids of this chunk of the customer's tickets (the data other services keep by ticket)",
    )
    chunk: int = Field(default=0, ge=0, description="this chunk's number, from 0")
    chunks: int = Field(default=1, ge=1, description="how many chunks the request has")
    requested_at: AwareDatetime


@event("aftersales.privacy.erasure-confirmed.v1", Topic.PRIVACY)
class ErasureConfirmed(EventData):
    """A service removed or irreversibly pseudonymised a customer's personal data (every chunk applied)."""

    erasure_id: str
    customer_id: str
    service: str = Field(description="the confirming service, e.g. followup")
    counts: dict[str, int] = Field(
        default_factory=dict, description="documents changed, by kind (zero when the service had none)"
    )
    confirmed_at: AwareDatetime


@event("aftersales.privacy.contact-preferences-changed.v1", Topic.PRIVACY)
class ContactPreferencesChanged(EventData):
    """A customer's consent or do-not-contact flag changed: whom the platform may call or message."""

    customer_id: str
    do_not_contact: bool = Field(description="no care calls and no messages to the customer at all")
    care_calls: bool = Field(default=True, description="consents to follow-up care calls (回访)")
    marketing: bool = Field(default=False, description="consents to marketing messages")
    changed_at: AwareDatetime
