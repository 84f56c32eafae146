"""Message templates (zh and en): the shipped defaults in `<language>.toml`, the parameters each template
may use, and rendering. An administrator's edit (stored by notify) overrides a default."""

from __future__ import annotations

import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

from aftersales.notify.domain import Language
from aftersales.shared.errors import InvalidRequest

# The parameters a notice of each template carries (notices.py builds them): ids, states and times only.
PARAMS: Mapping[str, frozenset[str]] = {
    "ticket_acknowledged": frozenset({"ticket_id"}),
    "survey_invitation": frozenset({"ticket_id", "survey_id", "survey_link", "expires_at"}),
    "complaint_received": frozenset({"complaint_id", "ticket_id"}),
    "complaint_investigating": frozenset({"complaint_id", "ticket_id"}),
    "complaint_replied": frozenset({"complaint_id", "ticket_id"}),
    "complaint_closed": frozenset({"complaint_id", "ticket_id"}),
    "work_order_assigned": frozenset({"ticket_id", "grid_id", "priority", "category", "resolution_due"}),
    "sla_warning": frozenset({"ticket_id", "grid_id", "clock", "threshold_pct", "due_at"}),
    "sla_breached": frozenset({"ticket_id", "grid_id", "clock", "due_at"}),
    "work_order_escalated": frozenset({"ticket_id", "grid_id", "reason"}),
    "complaint_overdue": frozenset({"complaint_id", "ticket_id", "state", "deadline_at"}),
    # `window` is the visit's window in the customer's time zone, filled in when the message is sent.
    "appointment_confirmed": frozenset(
        {"ticket_id", "appointment_id", "window", "window_start", "window_end"}
    ),
    "appointment_rescheduled": frozenset(
        {"ticket_id", "appointment_id", "window", "window_start", "window_end"}
    ),
    "appointment_cancelled": frozenset({"ticket_id", "appointment_id", "reason"}),
    "technician_silent": frozenset(
        {"technician_id", "grid_id", "last_heartbeat_at", "held_count", "held_ticket_ids"}
    ),
    "alert_firing": frozenset({"alertname", "severity", "count", "rotation", "alerts", "external_url"}),
    "alert_resolved": frozenset({"alertname", "severity", "count", "rotation", "alerts", "external_url"}),
}


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    key: str
    language: Language
    subject: str
    body: str

    def render(self, params: Mapping[str, str]) -> RenderedMessage:
        """Return the message with the parameters filled in (a missing one is left as `-`)."""
        values = {name: params.get(name) or "-" for name in PARAMS.get(self.key, ())}
        return RenderedMessage(
            subject=string.Template(self.subject).safe_substitute(values),
            body=string.Template(self.body).safe_substitute(values),
        )


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    subject: str
    body: str

    @property
    def text(self) -> str:
        """The message as one text: the subject line, then the body (robots and SMS)."""
        return f"{self.subject}\n{self.body}"


def _load(language: Language) -> dict[str, MessageTemplate]:
    raw = tomllib.loads(resources.files(__package__).joinpath(f"{language.value}.toml").read_text("utf-8"))
    return {
        key: MessageTemplate(key, language, str(entry["subject"]), str(entry["body"]))
        for key, entry in raw.items()
    }


DEFAULTS: Mapping[Language, Mapping[str, MessageTemplate]] = {lang: _load(lang) for lang in Language}


def checked(key: str, language: Language, subject: str, body: str) -> MessageTemplate:
    """Return a template an administrator wrote, refusing unknown templates and parameters (422)."""
    allowed = PARAMS.get(key)
    if allowed is None:
        raise InvalidRequest(f"key: unknown template {key!r}", field="key")
    for name, text in (("subject", subject), ("body", body)):
        matches = list(string.Template.pattern.finditer(text))
        if any(m.group("invalid") is not None for m in matches):
            raise InvalidRequest(f"{name}: a lone '$' (write $$ for a dollar sign)", field=name)
        used = {m.group("named") or m.group("braced") for m in matches} - {None}
        unknown = sorted(used - allowed)
        if unknown:
            raise InvalidRequest(
                f"{name}: unknown parameter ${{{unknown[0]}}} "
                f"(this template has {', '.join(sorted(allowed))})",
                field=name,
            )
    return MessageTemplate(key, language, subject, body)
