"""Intake's domain metrics (low-cardinality labels only: never customer, ticket or technician ids)."""

from __future__ import annotations

from prometheus_client import Counter

TICKETS_CREATED = Counter(
    "aftersales_tickets_created_total",
    "Tickets opened, by channel, category and priority",
    ["channel", "category", "priority"],
)
TICKETS_MERGED = Counter(
    "aftersales_tickets_merged_total", "IoT alerts folded into an open ticket (alert storms)", ["channel"]
)
TICKETS_REPLAYED = Counter(
    "aftersales_ticket_requests_replayed_total",
    "Requests answered from an earlier one (idempotency)",
    ["source"],
)
REQUESTS_REJECTED = Counter(
    "aftersales_ticket_requests_rejected_total",
    "Requests refused before anything was stored",
    ["source", "reason"],
)
TICKETS_REOPENED = Counter("aftersales_tickets_reopened_total", "Tickets reopened after a follow-up")
TICKETS_CLOSED = Counter("aftersales_tickets_closed_total", "Tickets closed, by reason", ["reason"])
TICKETS_CANCELLED = Counter("aftersales_tickets_cancelled_total", "Tickets cancelled")
STATUS_CHANGES = Counter(
    "aftersales_ticket_status_changes_total", "Ticket status transitions, by new status", ["status"]
)
