"""Dispatch tables: which handler an event type or a timer kind goes to.

A service's `consumers.py` declares `EventRoutes({TicketCreated: on_created, ...})` and subscribes it;
its `timers.py` registers `runtime.on_timer(kind, handler)`. No `isinstance` or `if kind ==` chains."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from prometheus_client import Counter
from pydantic import BaseModel

from aftersales.shared.contracts.registry import event_type_of
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.timers import Timer, TimerHandler

log = logging.getLogger("aftersales.routes")

EventRoute = Callable[[Any, CloudEvent], Awaitable[None]]
"""`async def on_x(model: X, event: CloudEvent) -> None`: the validated data and its envelope."""


TIMERS_UNROUTED = Counter(
    "aftersales_timers_unrouted", "Timers fired with a kind no handler is registered for", ["kind"]
)


class EventRoutes:
    """An event handler made of a table {event model type: handler}; other types are not this
    subscriber's business and pass (the consumer runtime has already refused types outside the
    contract)."""

    def __init__(self, routes: Mapping[type[BaseModel], EventRoute]) -> None:
        self._routes = dict(routes)

    def event_types(self) -> list[str]:
        """Return the CloudEvent types this table handles (for the AsyncAPI description)."""
        return sorted(event_type_of(model).type for model in self._routes)

    async def __call__(self, event: CloudEvent) -> None:
        model = event.model()
        route = self._routes.get(type(model))
        if route is not None:
            await route(model, event)


class TimerRoutes:
    """Timer handlers by kind. A timer of a kind nobody registered is logged and counted, then
    dropped: it was written by a version of the service that no longer has the handler."""

    def __init__(self) -> None:
        self._routes: dict[str, TimerHandler] = {}

    def on(self, kind: str, handler: TimerHandler) -> None:
        if kind in self._routes:
            raise ValueError(f"timer kind {kind!r} already has a handler")
        self._routes[kind] = handler

    def __bool__(self) -> bool:
        return bool(self._routes)

    async def __call__(self, timer: Timer) -> None:
        handler = self._routes.get(timer.kind)
        if handler is None:
            log.warning("timer of an unknown kind dropped", extra={"kind": timer.kind, "timer": timer.id})
            TIMERS_UNROUTED.labels(timer.kind).inc()
            return
        await handler(timer)
