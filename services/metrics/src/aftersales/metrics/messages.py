"""The events the metrics service publishes on `aftersales.reports.v1` (pure: models, envelopes, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aftersales.metrics.domain import ReportPeriod
from aftersales.shared.contracts.events import InspectionPublished
from aftersales.shared.envelope import CloudEvent, new_event

SOURCE = "/aftersales/metrics"


def inspection_published(report: Mapping[str, Any], period: ReportPeriod, now: datetime) -> CloudEvent:
    """Return the event announcing the publication of an inspection report."""
    return new_event(
        InspectionPublished(
            report_id=report["report_id"],
            period=period.label,
            period_start=period.start,
            period_end=period.end,
            findings=len(report["findings"]),
            occurred_at=now,
            kind=period.kind.value,
            finding_kinds=sorted({f["kind"] for f in report["findings"]}),
            url=f"/v1/reports/inspections?period={period.label}",
        ),
        source=SOURCE,
        subject=report["report_id"],
    )
