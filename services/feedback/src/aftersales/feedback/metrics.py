"""Feedback's domain metrics (low-cardinality labels only). Response rate = submitted / sent in PromQL."""

from prometheus_client import Counter, Gauge, Histogram

SURVEYS_SENT = Counter("aftersales_surveys_sent_total", "Satisfaction surveys sent (one per resolution)")
SURVEYS_SUBMITTED = Counter("aftersales_surveys_submitted_total", "Satisfaction surveys answered")
SURVEYS_REFUSED = Counter(
    "aftersales_survey_answers_refused_total", "Survey answers refused, by reason", ["reason"]
)
CSAT = Histogram("aftersales_csat", "Customer satisfaction answers (1-5)", buckets=(1, 2, 3, 4, 5))
NPS = Histogram("aftersales_nps", "Net promoter answers (0-10)", buckets=tuple(range(11)))
COMPLAINTS = Counter("aftersales_complaints_total", "Complaints opened", ["source", "scope"])
COMPLAINTS_OPEN = Gauge("aftersales_complaints_open", "Complaints not closed, by state", ["state"])
COMPLAINTS_OVERDUE = Counter(
    "aftersales_complaints_overdue_total", "Complaint deadlines missed (escalations)", ["deadline"]
)
COMPLAINTS_CLOSED = Counter(
    "aftersales_complaints_closed_total",
    "Complaints closed, by whether within the deadline",
    ["within_deadline"],
)
