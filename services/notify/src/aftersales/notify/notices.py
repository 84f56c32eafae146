"""Which messages an event calls for: pure functions from a contract event (and notify's copy of the
ticket's facts) to notices, each a template with its parameters for one recipient id."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from aftersales.notify.domain import Notice, RecipientKind, recipient_id
from aftersales.shared.calendar import zone
from aftersales.shared.contracts.desk import TechnicianSilent
from aftersales.shared.contracts.events import (
    ComplaintClosed,
    ComplaintOpened,
    ComplaintState,
    ComplaintUpdated,
    SlaBreached,
    SlaWarning,
    SurveySent,
    TicketCreated,
    WorkOrderAssigned,
    WorkOrderEscalated,
    WorkOrderReassigned,
)
from aftersales.shared.contracts.fieldwork import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentRescheduled,
)

# A silent technician's held tickets named in the message (his capacity bounds them anyway).
MAX_HELD_LISTED = 20


@dataclass(frozen=True, slots=True)
class TicketCopy:
    """What notify keeps of a ticket: whose it is and where it is worked (ids only)."""

    ticket_id: str
    customer_id: str | None = None
    grid_id: str | None = None


def when(at: datetime | None) -> str:
    """A time as messages show it: minutes, UTC."""
    return "-" if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _customer(ticket: TicketCopy | None) -> str | None:
    if ticket is None or ticket.customer_id is None:
        return None
    return recipient_id(RecipientKind.CUSTOMER, ticket.customer_id)


def acknowledgement(created: TicketCreated) -> list[Notice]:
    """自动回复: the customer learns the ticket number."""
    to = recipient_id(RecipientKind.CUSTOMER, created.customer_id)
    return [Notice("ticket_acknowledged", to, {"ticket_id": created.ticket_id})]


def survey_invitation(sent: SurveySent, ticket: TicketCopy | None, survey_link: str) -> list[Notice]:
    to = _customer(ticket)
    if to is None:
        return []
    params = {
        "ticket_id": sent.ticket_id,
        "survey_id": sent.survey_id,
        "survey_link": survey_link,
        "expires_at": when(sent.expires_at),
    }
    return [Notice("survey_invitation", to, params)]


# The complaint states a customer follows (a proposed resolution is internal until it is the reply).
CUSTOMER_COMPLAINT_TEMPLATES = {
    ComplaintState.RECEIVED: "complaint_received",
    ComplaintState.INVESTIGATING: "complaint_investigating",
    ComplaintState.REPLIED: "complaint_replied",
    ComplaintState.CLOSED: "complaint_closed",
}


def complaint_progress(
    complaint: ComplaintOpened | ComplaintUpdated | ComplaintClosed, ticket: TicketCopy | None
) -> list[Notice]:
    """The customer follows the complaint: received, under investigation, replied, closed."""
    to = _customer(ticket)
    template = CUSTOMER_COMPLAINT_TEMPLATES.get(complaint.state)
    if to is None or template is None:
        return []
    if isinstance(complaint, ComplaintUpdated) and complaint.change not in (None, "transition", "reopened"):
        return []  # an owner change, a reclassification or an overdue escalation is not news to them
    params = {"complaint_id": complaint.complaint_id, "ticket_id": complaint.ticket_id or "-"}
    return [Notice(template, to, params)]


def complaint_overdue(updated: ComplaintUpdated, ticket: TicketCopy | None) -> list[Notice]:
    """An overdue complaint: its owner and the grid supervisor."""
    if updated.change != "overdue":
        return []
    params = {
        "complaint_id": updated.complaint_id,
        "ticket_id": updated.ticket_id or "-",
        "state": updated.state.value,
        "deadline_at": when(updated.deadline_at),
    }
    to = []
    if updated.owner_id:
        to.append(recipient_id(RecipientKind.STAFF, updated.owner_id))
    if ticket is not None and ticket.grid_id:
        to.append(recipient_id(RecipientKind.GRID, ticket.grid_id))
    return [Notice("complaint_overdue", r, params) for r in to]


def new_assignment(assigned: WorkOrderAssigned | WorkOrderReassigned) -> list[Notice]:
    """The technician learns of the work order given to it."""
    if isinstance(assigned, WorkOrderAssigned):
        technician, priority, category = (
            assigned.technician_id,
            assigned.priority.value,
            assigned.category.value,
        )
        due = when(assigned.resolution_due)
    else:
        technician, priority, category, due = assigned.to_technician_id, "-", "-", "-"
    params = {
        "ticket_id": assigned.ticket_id,
        "grid_id": assigned.grid_id,
        "priority": priority,
        "category": category,
        "resolution_due": due,
    }
    return [Notice("work_order_assigned", recipient_id(RecipientKind.STAFF, technician), params)]


def sla_warning(warning: SlaWarning) -> list[Notice]:
    """At 50 % and 75 % of an SLA clock: the technician (the grid supervisor when nobody holds it)."""
    to = (
        recipient_id(RecipientKind.STAFF, warning.technician_id)
        if warning.technician_id
        else recipient_id(RecipientKind.GRID, warning.grid_id)
    )
    params = {
        "ticket_id": warning.ticket_id,
        "grid_id": warning.grid_id,
        "clock": warning.clock.value,
        "threshold_pct": str(warning.threshold_pct),
        "due_at": when(warning.due_at),
    }
    return [Notice("sla_warning", to, params)]


def sla_breached(breach: SlaBreached) -> list[Notice]:
    """A breached SLA clock: the grid supervisor."""
    params = {
        "ticket_id": breach.ticket_id,
        "grid_id": breach.grid_id,
        "clock": breach.clock.value,
        "due_at": when(breach.due_at),
    }
    return [Notice("sla_breached", recipient_id(RecipientKind.GRID, breach.grid_id), params)]


def escalation(escalated: WorkOrderEscalated) -> list[Notice]:
    """An escalation to the supervisor level: the named supervisor, else the grid's."""
    if escalated.level != "supervisor":
        return []  # a tier-2 escalation is a reassignment: the new technician hears of it as one
    to = (
        recipient_id(RecipientKind.STAFF, escalated.supervisor_id)
        if escalated.supervisor_id
        else recipient_id(RecipientKind.GRID, escalated.grid_id)
    )
    params = {"ticket_id": escalated.ticket_id, "grid_id": escalated.grid_id, "reason": escalated.reason}
    return [Notice("work_order_escalated", to, params)]


def appointment(
    event: AppointmentBooked | AppointmentRescheduled | AppointmentCancelled, ticket: TicketCopy | None
) -> list[Notice]:
    """The customer learns of the visit booked, moved or called off (the window in their time zone,
    filled in when the message is sent: see `localized`)."""
    to = _customer(ticket)
    if to is None:
        return []
    params = {"ticket_id": event.ticket_id, "appointment_id": event.appointment_id}
    if isinstance(event, AppointmentCancelled):
        return [Notice("appointment_cancelled", to, {**params, "reason": event.reason})]
    template = "appointment_confirmed" if isinstance(event, AppointmentBooked) else "appointment_rescheduled"
    window = {"window_start": event.window_start.isoformat(), "window_end": event.window_end.isoformat()}
    return [Notice(template, to, {**params, **window})]


def technician_silent(silent: TechnicianSilent) -> list[Notice]:
    """A silent technician: the named supervisor, else the grid's, with the work orders he holds."""
    to = (
        recipient_id(RecipientKind.STAFF, silent.supervisor_id)
        if silent.supervisor_id
        else recipient_id(RecipientKind.GRID, silent.grid_id)
    )
    held = silent.held_ticket_ids
    listed = ", ".join(held[:MAX_HELD_LISTED]) + (" ..." if len(held) > MAX_HELD_LISTED else "")
    params = {
        "technician_id": silent.technician_id,
        "grid_id": silent.grid_id,
        "last_heartbeat_at": when(silent.last_heartbeat_at),
        "held_count": str(len(held)),
        "held_ticket_ids": listed or "-",
    }
    return [Notice("technician_silent", to, params)]


def localized(params: Mapping[str, str], timezone: str) -> dict[str, str]:
    """Return the parameters with a visit's window (`window_start`/`window_end`, ISO) shown in the
    recipient's time zone, and `window` as one text: `2026-12-01 09:00-11:00 (Asia/Shanghai)`."""
    out = dict(params)
    try:
        start = datetime.fromisoformat(params["window_start"])
        end = datetime.fromisoformat(params["window_end"])
    except (KeyError, ValueError):
        return out
    tz = zone(timezone)
    start, end = start.astimezone(tz), end.astimezone(tz)
    end_text = end.strftime("%H:%M") if end.date() == start.date() else end.strftime("%Y-%m-%d %H:%M")
    out["window_start"] = start.strftime("%Y-%m-%d %H:%M")
    out["window_end"] = end.strftime("%Y-%m-%d %H:%M")
    out["window"] = f"{start.strftime('%Y-%m-%d %H:%M')}-{end_text} ({timezone})"
    return out
