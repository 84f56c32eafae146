"""Follow-up's domain metrics (low-cardinality labels only: kinds and outcomes, never ids)."""

from prometheus_client import Counter, Gauge

VISITS_DUE = Gauge("aftersales_visits_due", "Follow-up visits currently due (waiting for an agent)")
VISITS_OVERDUE = Counter("aftersales_visits_overdue_total", "Follow-up visits that went overdue (missed)")
VISIT_OUTCOMES = Counter(
    "aftersales_visit_outcomes_total", "Outcomes recorded for follow-up visits", ["kind", "outcome"]
)
VISITS_SCHEDULED = Counter("aftersales_visits_scheduled_total", "Follow-up visits scheduled", ["kind"])
VISITS_CANCELLED = Counter("aftersales_visits_cancelled_total", "Follow-up visits cancelled", ["kind"])
RESOLUTIONS_WITHOUT_FACTS = Counter(
    "aftersales_visits_planned_without_facts_total",
    "Resolutions whose visits were planned without the ticket's facts (they had not come within the wait)",
)
