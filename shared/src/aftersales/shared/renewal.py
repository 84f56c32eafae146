"""Keep a lease alive while a piece of work runs: the outbox relay's lease during a sweep that can take
minutes on FerretDB, a durable timer's lease while its handler runs on a busy database."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager


@asynccontextmanager
async def renewing(
    renew: Callable[[], Awaitable[object]], every_s: float, *, log: logging.Logger, what: str
) -> AsyncIterator[None]:
    """Call `renew` every `every_s` seconds while the block runs. A renewal that fails is logged and
    tried again at the next beat (the lease may run out meanwhile: whoever takes it over is fenced).
    When the block is left the renewals have stopped, so none lands after the caller's next write."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await renew()
            except Exception as exc:
                log.warning("%s not renewed; will try again", what, extra={"error": repr(exc)[:300]})

    task = asyncio.create_task(beat(), name=f"renewing {what}")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait([task])  # unlike `await task`, never swallows a cancellation of the caller
