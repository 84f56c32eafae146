"""Routing's Prometheus metrics (low-cardinality labels only: grids, clocks, levels, outcomes; never ids)."""

from prometheus_client import Counter, Gauge, Histogram

ASSIGNMENT_LATENCY = Histogram(
    "aftersales_assignment_latency_seconds",
    "From the start of a ticket round to its assignment",
    ["via"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600),
)
QUEUE_LENGTH = Gauge("aftersales_queue_length", "Work orders waiting for capacity", ["grid"])
GRID_LOAD = Gauge(
    "aftersales_grid_load_ratio", "Active work orders / capacity of on-duty technicians", ["grid"]
)
SLA_WARNINGS = Counter("aftersales_sla_warnings_total", "SLA warnings fired", ["clock", "grid"])
SLA_BREACHES = Counter("aftersales_sla_breaches_total", "SLA breaches", ["clock", "grid"])
ESCALATIONS = Counter("aftersales_escalations_total", "Work-order escalations", ["level", "reason"])
WORK_ORDER_OUTCOMES = Counter("aftersales_work_orders_total", "Dispatch outcomes", ["outcome"])
HAND_DISPATCHES = Counter(
    "aftersales_hand_dispatches_total",
    "Work orders dispatched by hand by a supervisor",
    ["outcome", "checks"],  # assigned | queued; checked | overridden
)
SILENT_TECHNICIANS = Counter(
    "aftersales_technicians_silent_total", "Silent spells flagged (a client stopped its heartbeat)", ["grid"]
)
SLOTS_REAPED = Counter(
    "aftersales_slots_reaped_total", "Capacity slots released because no open work order held them"
)
SLA_TIMERS_REARMED = Counter(
    "aftersales_sla_timers_rearmed_total",
    "Armed SLA timers found missing by the reconciler and scheduled again (each one a bug or lost write)",
)

POOL_FALLBACKS_REARMED = Counter(
    "aftersales_pool_fallbacks_rearmed_total",
    "Fallback timers of standing pool offers found missing by the reconciler and scheduled again",
)


def observe_assignment(via: str, seconds: float) -> None:
    """Count an assignment and the time from the start of its round."""
    WORK_ORDER_OUTCOMES.labels("assigned").inc()
    ASSIGNMENT_LATENCY.labels(via).observe(max(seconds, 0.0))


POOL_OUTCOMES = Counter(
    "aftersales_pool_outcomes_total",
    "Grab-order pool (抢单) steps",
    ["outcome"],  # offered | claimed | declined | returned | fallback_assigned | fallback_queued
)
