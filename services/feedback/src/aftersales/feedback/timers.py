"""Feedback's durable timer kinds, each with its one handler: a complaint missed the deadline of its
current step, or the deadline to close it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aftersales.shared.runtime import ServiceRuntime

if TYPE_CHECKING:
    from aftersales.feedback.service import Complaints

# The kinds are stored with each timer: renaming one orphans the timers already armed.
STEP_OVERDUE = "complaint_step_overdue"
CLOSE_OVERDUE = "complaint_close_overdue"


def register(runtime: ServiceRuntime, complaints: Complaints) -> None:
    runtime.on_timer(STEP_OVERDUE, complaints.on_step_overdue)
    runtime.on_timer(CLOSE_OVERDUE, complaints.on_close_overdue)
