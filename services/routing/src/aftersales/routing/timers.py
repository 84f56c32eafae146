"""Routing's durable timer kinds and their handlers: one SLA timer per work order (its earliest pending
warning or breach threshold), and one fallback timer per pool offer (unclaimed: automatic dispatch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aftersales.shared.runtime import ServiceRuntime

if TYPE_CHECKING:
    from aftersales.routing.service import RoutingService

SLA_TIMER = "sla"
POOL_FALLBACK_TIMER = "pool_fallback"


def register(runtime: ServiceRuntime, service: RoutingService) -> None:
    """Fire each timer kind's handler when its timers fall due."""
    runtime.on_timer(SLA_TIMER, service.clocks.on_timer)
    runtime.on_timer(POOL_FALLBACK_TIMER, service.pool.on_fallback)
