"""The metrics service's durable timer kinds, each with its one handler: the weekly and monthly
inspection report (巡检) falls due for publication."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aftersales.shared.runtime import ServiceRuntime

if TYPE_CHECKING:
    from aftersales.metrics.service import Reporting

# The kind is stored with each timer: renaming it orphans the timers already armed.
INSPECTION = "inspection"


def register(runtime: ServiceRuntime, reporting: Reporting, *, publish_reports: bool = True) -> None:
    """Fire the inspection timers' handler; with `publish_reports`, arm the next publications at start."""
    runtime.on_timer(INSPECTION, reporting.on_inspection_due)

    async def schedule(stop: asyncio.Event) -> None:
        if publish_reports:
            await reporting.schedule_next()

    runtime.spec.extra_tasks.append(schedule)
