"""The adaptive limit of work run at once against the store (consumers' keys, timers): halved on each
timeout down to one, grown back by one after `limit` successes in a row, never above its maximum, and
admitting no more holders than the limit at any moment."""

from __future__ import annotations

import asyncio

from aftersales.shared.adaptive import AdaptiveLimit


def test_the_limit_halves_on_timeouts_and_grows_back_one_at_a_time() -> None:
    limit = AdaptiveLimit(16, what="test")
    for expected in (8, 4, 2, 1, 1):
        limit.timed_out()
        assert limit.limit == expected
    grown = []
    for _ in range(1 + 2 + 3 + 4):
        limit.succeeded()
        grown.append(limit.limit)
    assert grown == [2, 2, 3, 3, 3, 4, 4, 4, 4, 5]
    limit.timed_out()
    assert limit.limit == 2
    for _ in range(1000):
        limit.succeeded()
    assert limit.limit == 16  # never above the configured maximum


async def test_no_more_holders_than_the_limit_at_once_and_a_lowered_limit_holds_back_newcomers() -> None:
    limit = AdaptiveLimit(4, what="test")
    held, most = 0, 0

    async def work() -> None:
        nonlocal held, most
        async with limit:
            held += 1
            most = max(most, held)
            await asyncio.sleep(0.01)
            held -= 1

    await asyncio.gather(*(work() for _ in range(20)))
    assert most == 4
    limit.timed_out()
    most = 0
    await asyncio.gather(*(work() for _ in range(20)))
    assert most == 2


async def test_a_waiter_cancelled_while_queued_or_just_admitted_leaves_no_place_taken() -> None:
    limit = AdaptiveLimit(1, what="test")
    async with limit:
        queued = asyncio.create_task(limit.__aenter__())
        await asyncio.sleep(0)
        queued.cancel()  # cancelled while waiting
        admitted = asyncio.create_task(limit.__aenter__())
        await asyncio.sleep(0)
    admitted.cancel()  # admitted by the exit above, cancelled before it ran
    for task in (queued, admitted):
        try:
            await task
        except asyncio.CancelledError:
            pass
    entered = asyncio.create_task(limit.__aenter__())
    await asyncio.wait_for(entered, 1.0)  # the one place is free again
    await limit.__aexit__(None, None, None)
