"""CloudEvents 1.0 envelope in the Kafka protocol binding, binary mode.

Attributes travel as `ce_*` headers, the value is the JSON of the event's pydantic model, and the Kafka
key is the ticket id (the CloudEvents `subject`), so one ticket's events stay in order on one partition.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opentelemetry.propagate import inject
from pydantic import BaseModel, ValidationError

from aftersales.shared.contracts import event_type_of, spec_for

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
REQUIRED_HEADERS = ("ce_specversion", "ce_id", "ce_source", "ce_type")


class PoisonEvent(Exception):
    """A message that can never be processed (malformed, unknown type, invalid data): it goes to the DLQ."""


@dataclass(frozen=True, slots=True)
class CloudEvent:
    """One event as it travels: the CloudEvents attributes plus the JSON-able data."""

    type: str
    source: str
    subject: str
    data: dict[str, Any]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    traceparent: str | None = None
    tracestate: str | None = None

    @property
    def key(self) -> bytes:
        return self.subject.encode()

    def headers(self) -> dict[str, str]:
        """Return the Kafka headers of this event (binary content mode)."""
        headers = {
            "ce_specversion": SPEC_VERSION,
            "ce_id": self.id,
            "ce_source": self.source,
            "ce_type": self.type,
            "ce_time": self.time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "ce_subject": self.subject,
            "content-type": CONTENT_TYPE,
        }
        if self.traceparent:
            headers["traceparent"] = self.traceparent
        if self.tracestate:
            headers["tracestate"] = self.tracestate
        return headers

    def ticket_id(self) -> str:
        """Return the ticket its data names; PoisonEvent when it names none (it can never be applied)."""
        ticket_id = self.data.get("ticket_id")
        if not isinstance(ticket_id, str) or not ticket_id:
            raise PoisonEvent(f"{self.type} without a ticket_id")
        return ticket_id

    def value(self) -> bytes:
        return json.dumps(self.data, separators=(",", ":"), ensure_ascii=False).encode()

    def to_document(self) -> dict[str, Any]:
        """Return the event as stored in an outbox (a plain BSON-able dict)."""
        return {
            "id": self.id,
            "type": self.type,
            "source": self.source,
            "subject": self.subject,
            "time": self.time,
            "data": self.data,
            "traceparent": self.traceparent,
            "tracestate": self.tracestate,
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> CloudEvent:
        return cls(
            id=doc["id"],
            type=doc["type"],
            source=doc["source"],
            subject=doc["subject"],
            time=doc["time"],
            data=doc["data"],
            traceparent=doc.get("traceparent"),
            tracestate=doc.get("tracestate"),
        )

    def model(self) -> BaseModel:
        """Return the data validated as the registered pydantic model of this event's type."""
        spec = spec_for(self.type)
        if spec is None:
            raise PoisonEvent(f"unknown event type {self.type!r}")
        try:
            validated: BaseModel = spec.model.model_validate(self.data)
            return validated
        except ValidationError as exc:
            raise PoisonEvent(f"invalid data for {self.type}: {_short(exc)}") from None


def new_event(data: BaseModel, *, source: str, subject: str, traceparent: str | None = None) -> CloudEvent:
    """Return a CloudEvent for a registered event model, its type looked up in the registry.

    Without an explicit `traceparent` the current trace is carried (the HTTP request's, or the consumed
    event's: handlers run inside it), and the outbox stores it with the event, so the relay publishes it
    inside the originating trace: one ticket is one trace across the services."""
    spec = event_type_of(data)
    if traceparent is None:
        carrier: dict[str, str] = {}
        inject(carrier)
        traceparent = carrier.get("traceparent")
    return CloudEvent(
        type=spec.type,
        source=source,
        subject=subject,
        data=data.model_dump(mode="json"),
        traceparent=traceparent,
    )


def decode_headers(raw: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Return Kafka record headers as text; a header that is not UTF-8 is a poison message."""
    out: dict[str, str] = {}
    for name, value in raw or ():
        if value is None:
            continue
        try:
            out[name] = value.decode()
        except UnicodeDecodeError:
            raise PoisonEvent(f"header {name!r} is not UTF-8") from None
    return out


def from_kafka(headers: Mapping[str, str], value: bytes | None) -> CloudEvent:
    """Parse a binary-mode CloudEvent from Kafka headers and value, or raise PoisonEvent saying why."""
    missing = [h for h in REQUIRED_HEADERS if not headers.get(h)]
    if missing:
        raise PoisonEvent(f"not a CloudEvent: missing header(s) {', '.join(missing)}")
    if headers["ce_specversion"] != SPEC_VERSION:
        raise PoisonEvent(f"unsupported ce_specversion {headers['ce_specversion']!r}")
    content_type = headers.get("content-type", CONTENT_TYPE).split(";")[0].strip()
    if content_type != CONTENT_TYPE:
        raise PoisonEvent(f"unsupported content-type {content_type!r}; expected {CONTENT_TYPE}")
    try:
        data = json.loads(value or b"")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PoisonEvent(f"value is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PoisonEvent("value must be a JSON object")
    time_text = headers.get("ce_time")
    try:
        time = datetime.fromisoformat(time_text.replace("Z", "+00:00")) if time_text else datetime.now(UTC)
    except ValueError:
        raise PoisonEvent(f"ce_time {time_text!r} is not RFC 3339") from None
    if time.tzinfo is None:
        raise PoisonEvent(f"ce_time {time_text!r} has no time zone")
    return CloudEvent(
        id=headers["ce_id"],
        type=headers["ce_type"],
        source=headers["ce_source"],
        subject=headers.get("ce_subject", ""),
        time=time,
        data=data,
        traceparent=headers.get("traceparent"),
        tracestate=headers.get("tracestate"),
    )


def _short(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()[:5]
    )


def validation_summary(exc: ValidationError) -> str:
    """Return a one-line, field-naming summary of a pydantic validation error."""
    return _short(exc)
