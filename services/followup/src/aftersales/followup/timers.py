"""Follow-up's durable timer kinds, each with its one handler: a visit falls due, a visit goes missed,
and a closed care visit plans the customer's next one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aftersales.shared.runtime import ServiceRuntime

if TYPE_CHECKING:
    from aftersales.followup.service import FollowUps

# The kinds are stored with each timer: renaming one orphans the timers already armed.
VISIT_DUE = "visit_due"
VISIT_OVERDUE = "visit_overdue"
NEXT_CARE = "care_next"


def register(runtime: ServiceRuntime, followups: FollowUps) -> None:
    runtime.on_timer(VISIT_DUE, followups.on_visit_due)
    runtime.on_timer(VISIT_OVERDUE, followups.on_visit_overdue)
    runtime.on_timer(NEXT_CARE, followups.on_next_care)
