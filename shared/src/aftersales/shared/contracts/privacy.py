"""Personal-data rights (PIPL 个人信息保护法): erasure requests and their confirmations, data exports
and their answers, and a customer's contact preferences (`aftersales.privacy.v1`).

Ids and counts only: these events name a customer by id and never carry a phone number, an e-mail
address, a name, an address or a signature in plaintext. An export's answer carries the service's copy
of the customer's data sealed to the export's one-off public key (only intake, which keeps the private
key, can open it). Their key and `ce_subject` are the customer id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from pydantic import AwareDatetime, Field

from aftersales.shared.contracts.common import EventData
from aftersales.shared.contracts.registry import event
from aftersales.shared.contracts.topics import Topic

# The services that hold a customer's personal data and confirm its erasure.
PERSONAL_DATA_HOLDERS = ("intake", "followup", "feedback", "notify", "fieldwork")
ERASURE_CHUNK_TICKETS = 200  # ticket ids per erasure-requested event
EXPORT_CHUNK_TICKETS = 50  # ticket ids per export-requested event: one answer (all its parts) per chunk
T = TypeVar("T")
EXPORT_SEALED_MAX_CHARS = 600_000  # one sealed answer part, base64: well below Kafka's 1 MB messages


def in_chunks(items: Sequence[T], size: int) -> list[list[T]]:
    """Split what a request names into its events' chunks of `size` (one empty chunk when it names
    nothing, so every holder still answers)."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)] or [[]]


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
    mail_ids: list[str] = Field(
        default_factory=list,
        max_length=ERASURE_CHUNK_TICKETS,
        description="ids of the inbound mails this chunk's tickets were opened from (their `external_ref` "
        "`mail:<id>`): the mails notify keeps by mail id (ids only)",
    )
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


@event("aftersales.privacy.export-requested.v1", Topic.PRIVACY)
class ExportRequested(EventData):
    """A copy of a customer's personal data is asked of every service (one event per chunk of its ticket
    ids); each answers, sealed to `public_key`."""

    export_id: str = Field(description="the export request; every chunk of one request carries it")
    customer_id: str
    ticket_ids: list[str] = Field(
        default_factory=list,
        max_length=EXPORT_CHUNK_TICKETS,
        description="ids of this chunk of the customer's tickets (the data other services keep by ticket)",
    )
    chunk: int = Field(default=0, ge=0, description="this chunk's number, from 0")
    chunks: int = Field(default=1, ge=1, description="how many chunks the request has")
    public_key: str = Field(
        min_length=44,
        max_length=44,
        description="the export's X25519 public key, base64: answers are sealed to it (libsodium sealed box)",
    )
    requested_at: AwareDatetime


@event("aftersales.privacy.export-answered.v1", Topic.PRIVACY)
class ExportAnswered(EventData):
    """A service's copy of a customer's data for one chunk of an export request, sealed to the export's
    public key: one event per part (a large answer comes in several parts)."""

    export_id: str
    customer_id: str
    service: str = Field(description="the answering service, e.g. followup")
    chunk: int = Field(ge=0, description="the request chunk this answers")
    chunks: int = Field(ge=1, description="how many chunks the request has")
    part: int = Field(default=0, ge=0, description="this part of the chunk's answer, from 0")
    parts: int = Field(default=1, ge=1, description="how many parts the chunk's answer has")
    counts: dict[str, int] = Field(
        default_factory=dict, description="records in this part, by kind (zero when the service had none)"
    )
    sealed: str = Field(
        max_length=EXPORT_SEALED_MAX_CHARS,
        description="the part's records as JSON, sealed to the export's public key (libsodium sealed box), "
        "base64: no plaintext personal data on the topic",
    )
    answered_at: AwareDatetime
