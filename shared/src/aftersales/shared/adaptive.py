"""How much work a process runs against its store at once, adapted to what the store keeps up with.

A consumer handles up to `consumer_concurrency` keys of a poll at once and the timers fire up to 16 at
once. When the store is the bottleneck (on FerretDB every write of a database waits for the one before),
more work at once does not finish sooner: each piece takes longer, until pieces pass their timeout, are
cancelled with part of their writes done, and are retried with the same company: a chaos run stood still
that way (routing's lag constant at 6,423 for minutes, handlers timing out and batches handed back
without a commit). So the limit halves when a piece times out and grows back by one after as many pieces
in a row succeeded as the limit allows (additive increase, multiplicative decrease), between 1 and the
configured maximum. Nothing changes while nothing times out. `BatchCap` does the same for the records
one whole-batch handler call takes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType
from typing import Any

from prometheus_client import Gauge

CONCURRENCY_LIMIT = Gauge(
    "aftersales_concurrency_limit",
    "Pieces of work run at once against the store: halved on a timeout, grown back on success",
    ["what"],
)


class AdaptiveLimit:
    """An async context manager admitting up to `limit` holders in arrival order; see the module's
    docstring. A holder leaving wakes one waiter (not all of them: a poll queues hundreds of keys)."""

    def __init__(self, most: int, *, what: str) -> None:
        self.most = max(1, most)
        self.limit = self.most
        self._held = 0
        self._streak = 0  # successes in a row since the limit last changed
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._gauge = CONCURRENCY_LIMIT.labels(what)
        self._gauge.set(self.limit)

    async def __aenter__(self) -> None:
        if self._held < self.limit and not self._waiters:
            self._held += 1
            return
        admitted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(admitted)
        try:
            await admitted  # the place is taken for this holder by whoever woke it
        except asyncio.CancelledError:
            if admitted.done() and not admitted.cancelled():
                self._leave()  # admitted and cancelled at once: give the place back
            else:
                self._waiters.remove(admitted)
            raise

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._leave()

    def _leave(self) -> None:
        self._held -= 1
        self._admit()

    def _admit(self) -> None:
        while self._waiters and self._held < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._held += 1

    def timed_out(self) -> None:
        """A piece of work passed its timeout: run half as many at once (at least one)."""
        self.limit = max(1, self.limit // 2)
        self._streak = 0
        self._gauge.set(self.limit)

    def succeeded(self) -> None:
        """A piece of work finished: after `limit` in a row, admit one more (up to the maximum)."""
        if self.limit >= self.most:
            return
        self._streak += 1
        if self._streak >= self.limit:
            self.limit += 1
            self._streak = 0
            self._gauge.set(self.limit)
            self._admit()


BATCH_CAP = Gauge(
    "aftersales_consumer_batch_cap",
    "Records a whole-batch handler call takes at most (0: the whole poll, never capped yet): halved "
    "when a call times out, doubled back after a call of that size finishes within half its timeout",
    ["group"],
)
WHOLE_POLL = 1 << 30


class BatchCap:
    """How many records one whole-batch handler call takes, adapted like `AdaptiveLimit`. A call that
    times out is cancelled with part of its writes done and applied again in halves; before, the next poll
    was offered whole again and timed out again, so an overloaded store spent each timeout on work that
    was thrown away and redone (intake's search index split 24 times in the first 8 minutes of a chaos
    run). Now the next calls take half the size that timed out, and the size doubles back after a call
    of the full size finishes within half its timeout."""

    def __init__(self, group: str) -> None:
        self.cap = WHOLE_POLL
        self._gauge = BATCH_CAP.labels(group)
        self._gauge.set(0)

    def parts(self, items: list[Any]) -> list[list[Any]]:
        """`items` cut in order into calls of at most the cap (each key's events keep their order)."""
        return [items[i : i + self.cap] for i in range(0, len(items), self.cap)] or [items]

    def timed_out(self, size: int) -> None:
        self._set(max(1, min(self.cap, size) // 2))

    def finished(self, size: int, elapsed_s: float, timeout_s: float) -> None:
        if self.cap < WHOLE_POLL and size >= self.cap and elapsed_s < timeout_s / 2:
            self._set(min(WHOLE_POLL, self.cap * 2))

    def _set(self, cap: int) -> None:
        self.cap = cap
        self._gauge.set(0 if cap >= WHOLE_POLL else cap)
