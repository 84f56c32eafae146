"""On-site work (`aftersales.fieldwork.v1`, produced by fieldwork): appointments, check-in and check-out,
signed service reports (服务报告) and spare-part stock (备件).

Ids, times, quantities and hashes only: no customer name, address, coordinates or signature ever goes
into one of these events (they stay in fieldwork's database).
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from aftersales.shared.contracts.common import EventData
from aftersales.shared.contracts.registry import event
from aftersales.shared.contracts.topics import Topic

# ---------------------------------------------------------------- appointments and visits


class AppointmentEvent(EventData):
    appointment_id: str
    ticket_id: str
    technician_id: str
    occurred_at: AwareDatetime


@event("aftersales.fieldwork.appointment-booked.v1", Topic.FIELDWORK)
class AppointmentBooked(AppointmentEvent):
    """A visit was booked for a time window (by the customer's channel or the desk)."""

    window_start: AwareDatetime
    window_end: AwareDatetime
    booked_by: Literal["channel", "desk", "technician"]
    chosen_by: Literal["customer", "desk"] | None = Field(
        default=None,
        description="who chose the window: `customer` (booked by the customer's channel) or `desk` (our "
        "side: desk or technician); routing counts the wait for a later window the customer chose as "
        "customer time. Absent from older producers: read `booked_by` (channel = customer)",
    )


@event("aftersales.fieldwork.appointment-rescheduled.v1", Topic.FIELDWORK)
class AppointmentRescheduled(AppointmentEvent):
    """A booked visit moved to another time window."""

    window_start: AwareDatetime
    window_end: AwareDatetime
    previous_window_start: AwareDatetime
    reschedules: int = Field(ge=1, description="how often this appointment has been moved")
    chosen_by: Literal["customer", "desk"] | None = Field(
        default=None,
        description="who chose the new window: `customer` (moved by the customer's channel) or `desk` (our "
        "side: desk or technician); absent from older producers (routing then keeps the booking's chooser)",
    )


@event("aftersales.fieldwork.appointment-no-show.v1", Topic.FIELDWORK)
class AppointmentNoShow(AppointmentEvent):
    """A booked visit did not happen because one party was absent."""

    absent: Literal["customer", "technician"]


@event("aftersales.fieldwork.appointment-cancelled.v1", Topic.FIELDWORK)
class AppointmentCancelled(AppointmentEvent):
    """A booked visit was called off (by request, or because its ticket was closed or cancelled)."""

    reason: Literal["requested", "ticket_closed"]


@event("aftersales.fieldwork.visit-departed.v1", Topic.FIELDWORK)
class VisitDeparted(AppointmentEvent):
    """The technician set off for the visit (travel time starts)."""


@event("aftersales.fieldwork.visit-checked-in.v1", Topic.FIELDWORK)
class VisitCheckedIn(AppointmentEvent):
    """The technician arrived on site (coordinates, if any, stay in fieldwork)."""

    travel_s: int | None = Field(default=None, ge=0, description="from departure to arrival, if departed")


@event("aftersales.fieldwork.visit-checked-out.v1", Topic.FIELDWORK)
class VisitCheckedOut(AppointmentEvent):
    """The technician left the site."""

    work_s: int = Field(ge=0, description="time on site, check-in to check-out")


# ---------------------------------------------------------------- service reports


@event("aftersales.fieldwork.report-signed.v1", Topic.FIELDWORK)
class ServiceReportSigned(EventData):
    """A service report was signed by the customer and locked: its canonical content's SHA-256."""

    report_id: str
    ticket_id: str
    technician_id: str
    content_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the canonical content")
    signed_at: AwareDatetime
    supersedes_report_id: str | None = Field(default=None, description="the report this one corrects")
    resolution_code: str


# ---------------------------------------------------------------- spare-part stock (备件)


class StockEvent(EventData):
    location_id: str = Field(description="`van:<technician id>` or `warehouse:<grid id>`")
    part_id: str
    occurred_at: AwareDatetime


@event("aftersales.fieldwork.stock-received.v1", Topic.FIELDWORK)
class StockReceived(StockEvent):
    """Parts were added to a location's stock (a delivery, or parts returned from a report)."""

    quantity: int = Field(ge=1)
    reason: Literal["delivery", "returned"]
    unit_cost_cents: int | None = Field(
        default=None,
        ge=0,
        description="a delivery's cost of one part in the smallest currency unit (分 for CNY), when given; "
        "the stock keeps the moving average of its deliveries",
    )
    report_id: str | None = Field(
        default=None, description="parts returned from a service report: the report they were taken for"
    )
    ticket_id: str | None = Field(default=None, description="parts returned from a report: its ticket")
    line_id: str | None = Field(
        default=None,
        description="parts returned from a report: its line (with `report_id`, the `stock-consumed` "
        "they undo; metrics subtracts them from the ticket's parts)",
    )


@event("aftersales.fieldwork.stock-consumed.v1", Topic.FIELDWORK)
class StockConsumed(StockEvent):
    """Parts were used on a service report and left the stock."""

    quantity: int = Field(ge=1)
    report_id: str
    ticket_id: str
    line_id: str
    unit_cost_cents: int | None = Field(
        default=None,
        ge=0,
        description="the cost of one part in the smallest currency unit (分 for CNY), "
        "when the stock knows it; metrics sums it into the parts cost per resolution",
    )


@event("aftersales.fieldwork.stock-low.v1", Topic.FIELDWORK)
class StockLow(StockEvent):
    """A location's stock of a part fell to its low-stock threshold or below."""

    threshold: int = Field(
        ge=0, description="the location's low-stock threshold: what is left is at most this"
    )


@event("aftersales.fieldwork.waiting-for-parts.v1", Topic.FIELDWORK)
class WorkOrderWaitingForParts(EventData):
    """A work order cannot go on until parts arrive (a pending reason)."""

    ticket_id: str
    technician_id: str
    part_id: str
    quantity: int = Field(ge=1)
    occurred_at: AwareDatetime
