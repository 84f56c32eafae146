"""Durable timers when the database does not answer a write (frozen, connection broken): the write may
have been applied, so the replica that made it takes the timer again within seconds, fenced by its
version, instead of leaving it until its lease runs out; another replica still respects the lease, and a
timer this replica is handling right now is never taken twice."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from pymongo.errors import AutoReconnect, NetworkTimeout

from aftersales.shared.errors import RetryLater
from aftersales.shared.mongo import Database
from aftersales.shared.testing import InMemoryMongo
from aftersales.shared.timers import LOOK_AGAIN, MAX_ATTEMPTS, DurableTimers, Timer

T0 = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)


class Unanswered:
    """A collection whose next calls of the named methods are applied, then answered with an error."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection
        self.lose: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._collection, name)
        if name not in ("update_one", "find_one_and_update", "find_one_and_delete"):
            return method

        async def call(*args: Any, **kwargs: Any) -> Any:
            result = await method(*args, **kwargs)
            if name in self.lose:
                self.lose.remove(name)
                raise AutoReconnect("connection closed before the answer")
            return result

        return call


class Db:
    def __init__(self, real: Any) -> None:
        self.real = real
        self.timers = Unanswered(real["timers"])

    def __getitem__(self, name: str) -> Any:
        return self.timers if name == "timers" else self.real[name]


def replicas() -> tuple[DurableTimers, DurableTimers, Unanswered]:
    db = Db(InMemoryMongo()["test"])
    one, other = (DurableTimers(cast(Database, db)) for _ in range(2))
    return one, other, db.timers


def recorder() -> tuple[list[str], Any]:
    fired: list[str] = []

    async def handler(timer: Timer) -> None:
        fired.append(timer.id)

    return fired, handler


def soon(after: timedelta = timedelta(0)) -> datetime:
    return datetime.now(UTC) + after


async def test_a_claim_whose_answer_was_lost_is_taken_again_by_its_replica_not_after_the_lease() -> None:
    one, other, timers = replicas()
    fired, handler = recorder()
    await one.schedule("tm-1", "sla", T0, {})
    timers.lose.append("find_one_and_update")  # the claim is written, its answer lost
    assert await one.fire_due(handler, now=soon()) == 0 and fired == []
    # Another replica sees the timer running under a lease that has not run out: it leaves it alone.
    await other.refresh()
    assert await other.fire_due(handler, now=soon(LOOK_AGAIN)) == 0
    # The replica that claimed it looks again within seconds and fires it, once.
    assert await one.fire_due(handler, now=soon(LOOK_AGAIN)) == 1
    assert fired == ["tm-1"] and await one.get("tm-1") is None


async def test_a_handled_timer_whose_deletion_was_not_confirmed_is_finished_within_seconds() -> None:
    one, _, timers = replicas()
    fired, handler = recorder()
    await one.schedule("tm-2", "sla", T0, {})
    timers.lose.append("find_one_and_delete")  # handled, deleted, the answer lost
    assert await one.fire_due(handler, now=soon()) == 0
    assert await one.fire_due(handler, now=soon(LOOK_AGAIN)) == 0  # nothing left to fire
    assert fired == ["tm-2"] and await one.get("tm-2") is None

    await one.schedule("tm-3", "sla", T0, {})  # this time the deletion itself fails
    real_delete = timers._collection.find_one_and_delete

    async def failing_delete(*args: Any, **kwargs: Any) -> Any:
        raise AutoReconnect("database frozen")

    timers._collection.find_one_and_delete = failing_delete
    assert await one.fire_due(handler, now=soon()) == 0
    timers._collection.find_one_and_delete = real_delete
    # Handled again (handlers are idempotent), and this time finished: not left for the 60 s lease.
    assert await one.fire_due(handler, now=soon(LOOK_AGAIN)) == 1
    assert fired == ["tm-2", "tm-3", "tm-3"] and await one.get("tm-3") is None


async def test_a_timer_being_handled_is_not_taken_again_by_its_own_replica() -> None:
    one, _, _ = replicas()
    started, release = asyncio.Event(), asyncio.Event()
    runs: list[str] = []

    async def slow(timer: Timer) -> None:
        runs.append(timer.id)
        started.set()
        await release.wait()

    await one.schedule("tm-4", "sla", T0, {})
    firing = asyncio.create_task(one.fire_due(slow, now=soon()))
    await started.wait()
    assert await one.claim("tm-4", soon(LOOK_AGAIN)) is None
    release.set()
    assert await firing == 1 and runs == ["tm-4"]


async def test_a_due_pending_timer_is_won_in_one_write_without_a_read() -> None:
    one, _, timers = replicas()
    fired, handler = recorder()
    await one.schedule("tm-9", "sla", T0, {})
    reads: list[Any] = []
    real_find_one = timers._collection.find_one

    async def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(args)
        return await real_find_one(*args, **kwargs)

    timers._collection.find_one = counted
    assert await one.fire_due(handler, now=soon()) == 1
    assert fired == ["tm-9"] and reads == []


async def test_a_cancelled_timer_is_not_claimed_when_it_comes_due_and_one_scheduled_again_is() -> None:
    one, _, timers = replicas()
    fired, handler = recorder()
    claims: list[Any] = []
    real_claim = timers._collection.find_one_and_update

    async def counted(*args: Any, **kwargs: Any) -> Any:
        claims.append(args[0]["_id"])
        return await real_claim(*args, **kwargs)

    timers._collection.find_one_and_update = counted
    await one.schedule("tm-gone", "sla", T0, {})
    await one.schedule("tm-back", "sla", T0, {})
    assert await one.cancel("tm-gone") and await one.cancel("tm-back")
    await one.schedule("tm-back", "sla", T0 + timedelta(seconds=1), {})  # armed again after its cancel
    assert await one.fire_due(handler, now=soon()) == 1
    assert fired == ["tm-back"] and claims == ["tm-back"]  # no claim of the cancelled timer


async def test_a_timer_scheduled_again_for_the_same_time_while_its_cancel_is_in_flight_still_fires() -> None:
    one, _, timers = replicas()
    fired, handler = recorder()
    await one.schedule("tm-again", "sla", T0, {})
    real_delete = timers._collection.delete_one

    async def rescheduled_meanwhile(*args: Any, **kwargs: Any) -> Any:
        result = await real_delete(*args, **kwargs)
        await one.schedule("tm-again", "sla", T0, {})  # lands after the delete, same due time
        return result

    timers._collection.delete_one = rescheduled_meanwhile
    assert await one.cancel("tm-again")
    assert await one.fire_due(handler, now=soon()) == 1 and fired == ["tm-again"]


class Unscannable:
    """A collection whose scans (`find`) time out, as a whole-collection read on a busy FerretDB does."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection
        self.scans = 0

    def __getattr__(self, name: str) -> Any:
        if name == "find":
            self.scans += 1
            raise NetworkTimeout("timed out (configured timeouts: socketTimeoutMS: 10000.0ms)")
        return getattr(self._collection, name)


async def test_a_scan_that_keeps_failing_does_not_stop_the_timers_this_replica_knows_from_firing() -> None:
    """Before, the start-up scan and firing shared one step: a scan that timed out at every pass (a
    large collection on FerretDB) meant no timer of that replica ever fired."""
    db = InMemoryMongo()["test"]
    timers = Unscannable(db["timers"])
    replica = DurableTimers(cast(Database, {"timers": timers}), poll_interval_s=0.05)
    await replica.schedule("breach-1", "sla", soon())
    fired, handler = recorder()
    stop = asyncio.Event()
    running = asyncio.create_task(replica.run(handler, stop))
    try:
        for _ in range(100):
            if fired and timers.scans >= 2:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await running
    assert fired == ["breach-1"]
    assert timers.scans >= 2  # the failed start-up scan is tried again, not given up


async def test_a_handler_slower_than_its_lease_keeps_the_timer_and_it_fires_once() -> None:
    """Before, a handler was cut at half the lease: a busy database made every SLA handler time out, the
    limit of timers fired at once fell to one, and warnings fired minutes late. The lease is now renewed
    while the handler runs, so the other replica leaves the timer alone and it fires once."""
    db = Db(InMemoryMongo()["test"])
    one, other = (DurableTimers(cast(Database, db), lease_s=0.3) for _ in range(2))
    runs: list[tuple[str, int]] = []
    started = asyncio.Event()

    async def slow(timer: Timer) -> None:
        runs.append(("one", timer.version))
        started.set()
        await asyncio.sleep(1.2)  # four leases

    async def quick(timer: Timer) -> None:
        runs.append(("other", timer.version))

    await one.schedule("tm-slow", "sla", T0, {})
    firing = asyncio.create_task(one.fire_due(slow, now=soon()))
    await asyncio.wait_for(started.wait(), timeout=5)
    for _ in range(20):  # the other replica keeps looking while the slow handler runs
        await other.refresh()
        await other.fire_due(quick, now=soon())
        await asyncio.sleep(0.05)
    assert await firing == 1
    assert runs == [("one", 1)] and await one.get("tm-slow") is None


async def test_a_hung_handler_is_cut_at_its_timeout_and_stops_renewing_its_lease() -> None:
    db = Db(InMemoryMongo()["test"])
    one = DurableTimers(cast(Database, db), lease_s=0.3, handler_timeout_s=0.5)
    other = DurableTimers(cast(Database, db), lease_s=0.3)
    fired, handler = recorder()

    async def hangs(timer: Timer) -> None:
        await asyncio.sleep(3600)

    await one.schedule("tm-hung", "sla", T0, {})
    assert await one.fire_due(hangs, now=soon()) == 0  # cut after 0.5 s and handed back
    doc = await one.get("tm-hung")
    assert doc is not None and doc["state"] == "pending" and doc["lease_until"] is None
    await asyncio.sleep(0.3)  # a renewal still running would set a lease again
    assert (await one.get("tm-hung") or {}).get("lease_until") is None
    await other.refresh()
    assert await other.fire_due(handler, now=soon(timedelta(seconds=3))) == 1 and fired == ["tm-hung"]


async def test_a_hung_handler_holds_one_place_and_the_timers_behind_it_still_fire() -> None:
    """Before, the run loop fired a batch and waited for all of it: one handler hung until its timeout
    (120 s by default) stopped every other timer of that replica for as long."""
    replica = DurableTimers(cast(Database, Db(InMemoryMongo()["test"])), poll_interval_s=0.05)
    fired: list[str] = []
    hung = asyncio.Event()

    async def handler(timer: Timer) -> None:
        if timer.id == "tm-hangs":
            hung.set()
            await asyncio.sleep(3600)
        fired.append(timer.id)

    await replica.schedule("tm-hangs", "sla", soon())
    stop = asyncio.Event()
    running = asyncio.create_task(replica.run(handler, stop))
    try:
        await asyncio.wait_for(hung.wait(), timeout=5)
        for n in range(3):  # fall due one after another while the first handler still hangs
            await replica.schedule(f"tm-{n}", "sla", datetime.now(UTC))
        for _ in range(100):
            if len(fired) == 3 and replica.firing == {"tm-hangs"}:
                break
            await asyncio.sleep(0.05)
        assert sorted(fired) == ["tm-0", "tm-1", "tm-2"] and replica.firing == {"tm-hangs"}
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    assert replica.firing == frozenset()  # the hung handler was cancelled with the loop


async def test_a_timer_failing_on_an_unavailable_database_never_gives_up_and_others_do() -> None:
    one, _, timers = replicas()
    fired: list[str] = []
    down = True

    async def handler(timer: Timer) -> None:
        if timer.id == "tm-bug":
            raise ValueError("a handler that cannot do this timer")
        if timer.id == "tm-race":
            raise RetryLater("loses its race every time")  # a livelock looks like this: alert
        if down:
            raise AutoReconnect("database unavailable")
        fired.append(timer.id)

    await one.schedule("tm-outage", "sla", T0, {})
    await one.schedule("tm-bug", "sla", T0, {})
    await one.schedule("tm-race", "sla", T0, {})
    later = timedelta(0)
    for _ in range(MAX_ATTEMPTS + 3):  # each retry falls due at most 5 minutes on
        later += timedelta(minutes=6)
        await one.fire_due(handler, now=soon(later))
    outage = await timers._collection.find_one({"_id": "tm-outage"})
    bug = await timers._collection.find_one({"_id": "tm-bug"})
    assert outage["state"] == "pending" and outage["attempts"] > MAX_ATTEMPTS  # an outage loses no timer
    assert bug["state"] == "failed" and bug["attempts"] == MAX_ATTEMPTS  # a person has to look at it
    race = await timers._collection.find_one({"_id": "tm-race"})
    assert race["state"] == "failed" and race["attempts"] == MAX_ATTEMPTS
    down = False
    assert await one.fire_due(handler, now=soon(later + timedelta(minutes=6))) == 1
    assert fired == ["tm-outage"] and await one.get("tm-outage") is None
