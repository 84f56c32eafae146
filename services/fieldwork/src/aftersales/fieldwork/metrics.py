"""Fieldwork's domain metrics (low-cardinality labels only: steps, never ids)."""

from prometheus_client import Counter

APPOINTMENTS = Counter(
    "aftersales_fieldwork_appointment_steps_total",
    "Appointment steps recorded: booked, and each event type of a later step",
    ["step"],
)
REPORTS_SIGNED = Counter("aftersales_fieldwork_reports_signed_total", "Service reports signed and locked")
PARTS_REFUSED = Counter(
    "aftersales_fieldwork_parts_refused_total", "Parts not taken from stock: not enough on hand"
)
