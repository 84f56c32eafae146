"""Which messages an event calls for: pure functions from a contract event (and notify's copy of the
ticket's facts) to notices, each a template with its parameters for one recipient id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from aftersales.notify.domain import Notice, RecipientKind, recipient_id
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
