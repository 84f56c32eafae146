"""Notify's domain metrics (low-cardinality labels only: channels, templates and outcomes, never ids)."""

from prometheus_client import Counter

DELIVERIES_PLANNED = Counter(
    "aftersales_notifications_planned_total",
    "Messages planned (one per event, recipient and channel)",
    ["channel"],
)
ATTEMPTS = Counter(
    "aftersales_notification_attempts_total", "Send attempts by channel and outcome", ["channel", "outcome"]
)
DELIVERIES_DONE = Counter(
    "aftersales_notifications_total", "Messages finished, by channel and final status", ["channel", "status"]
)
DEFERRED = Counter(
    "aftersales_notifications_deferred_total", "Messages held back by a customer's do-not-disturb hours"
)
UNADDRESSED = Counter(
    "aftersales_notifications_unaddressed_total",
    "Messages nobody could be found for (no recipient registered under the id)",
    ["template"],
)
INBOUND_MAILS = Counter(
    "aftersales_inbound_mails_total",
    "Mails received by the inbound gateway, by outcome (request, reply, duplicate, ignored, refused, busy)",
    ["outcome"],
)
SUPPRESSED = Counter(
    "aftersales_notifications_suppressed_total",
    "Customer messages not planned because the customer asked not to be contacted (do-not-contact)",
    ["template"],
)
