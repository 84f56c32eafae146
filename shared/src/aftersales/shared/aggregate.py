"""The aggregate idiom every service follows: load → a pure `decide` → a version-guarded write that
carries the decision's events in the document's outbox (one atomic write).

    decision = await decide_until_written(load, decide, write)

`decide` is a pure function of the loaded state (in `domain.py`); `load` and `write` live in the
service's `store.py`, the only module that speaks MongoDB. `write` returns False when its guard (the
version or status the state was read at) no longer matches: somebody else changed the aggregate in the
meantime, so the state is loaded and decided again. After `attempts` lost races the caller gets
`RetryLater`: a consumer backs off and redelivers, an HTTP caller gets 503 with `Retry-After`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aftersales.shared.errors import RetryLater

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Decision(Generic[S]):
    """What one decision changes: the aggregate's new state and the contract events it causes."""

    state: S
    events: tuple[Any, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.events)


async def decide_until_written(
    load: Callable[[], Awaitable[S]],
    decide: Callable[[S], Decision[S]],
    write: Callable[[S, Decision[S]], Awaitable[bool]],
    *,
    attempts: int = 3,
    what: str = "aggregate",
) -> Decision[S]:
    """Load, decide and write until the guarded write wins; `RetryLater` after `attempts` lost races.

    A decision without events changes nothing and is not written (an idempotent repeat)."""
    for _ in range(attempts):
        before = await load()
        decision = decide(before)
        if not decision.changed or await write(before, decision):
            return decision
    raise RetryLater(f"{what} changed on each of {attempts} attempts; try again")
