"""IoT alert storms: the alerts of one device and fault fold into one ticket while they keep coming.

Alerts are folded a group at a time (one storm's alerts of a consumed batch, or one HTTP request): the
storm's open ticket is read once, every alert of the group is folded in memory, and the result is one
version-guarded write with one `TicketMerged` event, whatever the group's size. An alert observed after
the storm's window closed releases the storm, and the next alert opens a new ticket.

Two kinds of repetition are told apart:
- a **redelivered record** (the consumer crashed before committing): the ticket keeps, per partition of
  the requests topic, the highest offset it absorbed (`request_offsets`), so a record at or below it is
  skipped. This is exact and costs nothing extra.
- a **replayed request** (the same idempotency key sent again, e.g. a gateway's retry): each alert's key
  is claimed as its own document (`request_keys`, one `insert_many` per group). A key already claimed by
  the same record (same partition and offset) is that record's redelivery, decided by the offsets above;
  claimed by anything else, it is a replay and changes nothing.
A key is claimed before the fold is written, so a crash in between makes a retried HTTP alert count as a
replay of itself: the storm's `alert_count` may then be one short, and no ticket is ever lost (a replayed
first alert of a storm with no open ticket opens it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aftersales.intake import domain, metrics
from aftersales.intake.rules import Classification
from aftersales.intake.store import ContentionError, TicketStore
from aftersales.shared.contracts.events import TicketMerged, TicketUpdated
from aftersales.shared.contracts.requests import TicketRequest
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.errors import Conflict

PRIORITY_ORDER = ["P1", "P2", "P3", "P4"]
MAX_ROUNDS = 200


@dataclass(frozen=True, slots=True)
class Alert:
    """One IoT alert to fold, with what identifies a repetition of it."""

    request: TicketRequest
    decided: Classification
    fingerprint: str
    key: str | None  # the scoped idempotency key
    caller: str  # who sent it ("http:<token subject>", "kafka:<ce_source>")
    source: str  # "http" or "kafka"
    partition: int | None = None  # where it was read from the requests topic (Kafka alerts only)
    offset: int | None = None

    @property
    def observed(self) -> datetime:
        assert self.request.iot is not None
        return domain.stored_precision(self.request.iot.observed_at)


NewTicket = Callable[[Alert], tuple[dict[str, Any], CloudEvent]]
EventFor = Callable[[Any, str], CloudEvent]


class Storms:
    def __init__(self, store: TicketStore, *, window_s: float, new_ticket: NewTicket, event_for: EventFor):
        self.store = store
        self.window_s = window_s
        self._new_ticket = new_ticket
        self._event_for = event_for

    async def absorb(self, storm: str, alerts: Sequence[Alert]) -> list[tuple[dict[str, Any], str]]:
        """Fold a storm's alerts (in order); return (ticket, "created"|"merged"|"replayed") for each."""
        replayed = await self._replays(alerts)
        fresh = [a for i, a in enumerate(alerts) if i not in replayed]
        results: dict[int, tuple[dict[str, Any], str]] = {}
        if fresh:
            folded = await self._fold(storm, fresh)
            for alert, outcome in zip(fresh, folded, strict=True):
                results[id(alert)] = outcome
        out: list[tuple[dict[str, Any], str]] = []
        for i, alert in enumerate(alerts):
            if i in replayed:
                doc = await self.store.open_storm(storm)
                if doc is None:  # the replayed alert's storm has no ticket: a crash lost the first one
                    [(doc, _)] = await self._fold(storm, [alert])
                metrics.TICKETS_REPLAYED.labels(alert.source).inc()
                out.append((doc, "replayed"))
            else:
                out.append(results[id(alert)])
        return out

    async def _replays(self, alerts: Sequence[Alert]) -> set[int]:
        """Claim the alerts' keys; return the indexes of alerts that replay an earlier request."""
        keyed = [(i, a) for i, a in enumerate(alerts) if a.key is not None]
        if not keyed:
            return set()
        claims = [
            {
                "_id": a.key,
                "partition": a.partition,
                "offset": a.offset,
                "fingerprint": a.fingerprint,
                "at": datetime.now(UTC),
            }
            for _, a in keyed
        ]
        taken = await self.store.claim_request_keys(claims)
        replays: set[int] = set()
        for position in taken:
            i, alert = keyed[position]
            assert alert.key is not None
            holder = await self.store.request_key(alert.key)
            if holder is not None and holder.get("fingerprint") not in (None, alert.fingerprint):
                raise Conflict(
                    "this Idempotency-Key was already used for a different request; use a new key",
                    field="Idempotency-Key",
                )
            same_record = (
                holder is not None
                and alert.partition is not None
                and (holder.get("partition"), holder.get("offset")) == (alert.partition, alert.offset)
            )
            if not same_record:
                replays.add(i)
        return replays

    async def _fold(self, storm: str, alerts: Sequence[Alert]) -> list[tuple[dict[str, Any], str]]:
        outcomes: list[tuple[dict[str, Any], str]] = []
        todo = list(alerts)
        look_everywhere = False
        for _ in range(MAX_ROUNDS):
            if not todo:
                return outcomes
            doc = await self.store.open_storm(storm, look_everywhere=look_everywhere)
            done = await self._fold_into(storm, doc, todo, outcomes)
            # Opening the storm's ticket collided with one that has no pointer: look for it by key.
            look_everywhere = doc is None and done == 0
            todo = todo[done:]
        raise ContentionError("alert storm kept changing; try again")

    async def _fold_into(
        self,
        storm: str,
        doc: dict[str, Any] | None,
        alerts: Sequence[Alert],
        outcomes: list[tuple[dict[str, Any], str]],
    ) -> int:
        """Fold a prefix of `alerts` into `doc` (or open the storm's ticket); return how many were done."""
        if doc is None:
            ticket, created = self._new_ticket(alerts[0])
            ticket = {**ticket, "storm_key": storm, "request_offsets": _offsets({}, alerts[0])}
            if not await self.store.insert(ticket, [created]):
                return 0  # another writer opened this storm meanwhile: fold into its ticket
            await self.store.point_storm(storm, ticket["_id"])
            metrics.TICKETS_CREATED.labels(ticket["channel"], ticket["category"], ticket["priority"]).inc()
            outcomes.append((ticket, "created"))
            return 1
        merge = _Merge(doc)
        taken = 0
        for alert in alerts:
            if merge.absorbed(alert):
                taken += 1  # a redelivered record: this ticket already counts it
                continue
            if not domain.joins_storm(merge.last, alert.observed, self.window_s):
                break
            merge.add(alert)
            taken += 1
        if taken == 0:  # the next alert came after the window: release the storm, the next round opens one
            released = {"$set": {"storm_key": domain.released_storm_key(doc["_id"])}}
            await self.store.conditional_update(doc, released)
            return 0
        after = doc
        if merge.count > merge.base_count:
            sets, events = merge.decided(self._event_for)
            if not await self.store.conditional_update(doc, {"$set": sets}, events):
                return 0  # lost a race with another writer: re-read and fold these again
            metrics.TICKETS_MERGED.labels(alerts[0].request.channel.value).inc(merge.count - merge.base_count)
            after = {**doc, **sets}
        outcomes.extend((after, "merged") for _ in range(taken))
        return taken


class _Merge:
    """The in-memory fold of several alerts into one storm ticket."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.base_count = int(doc.get("alert_count") or 1)
        self.count = self.base_count
        self.first: datetime = doc["first_seen"]
        self.last: datetime = doc["last_seen"]
        self.offsets: dict[str, int] = dict(doc.get("request_offsets") or {})
        self.priority: str = doc["priority"]
        self.severity = doc.get("severity")
        self.fault_code = doc.get("fault_code")

    def absorbed(self, alert: Alert) -> bool:
        """True when the ticket already holds this record (a redelivery after a crash)."""
        if alert.partition is None or alert.offset is None:
            return False
        seen = self.offsets.get(str(alert.partition))
        return seen is not None and alert.offset <= seen

    def add(self, alert: Alert) -> None:
        self.count += 1
        self.first, self.last = min(self.first, alert.observed), max(self.last, alert.observed)
        self.offsets = _offsets(self.offsets, alert)
        priority = alert.decided.priority.value
        if PRIORITY_ORDER.index(priority) < PRIORITY_ORDER.index(self.priority):
            assert alert.request.iot is not None
            self.priority, self.severity = priority, alert.request.iot.severity

    def decided(self, event_for: EventFor) -> tuple[dict[str, Any], list[CloudEvent]]:
        """Return the ticket's new fields and the events of the whole fold."""
        now = datetime.now(UTC)
        ticket_id = self.doc["_id"]
        sets: dict[str, Any] = {
            "alert_count": self.count,
            "first_seen": self.first,
            "last_seen": self.last,
            "request_offsets": self.offsets,
            "updated_at": now,
        }
        events = [
            event_for(
                TicketMerged(
                    ticket_id=ticket_id,
                    fault_code=str(self.fault_code),
                    alert_count=self.count,
                    first_seen=self.first,
                    last_seen=self.last,
                ),
                ticket_id,
            )
        ]
        if self.priority != self.doc["priority"]:
            sets.update(priority=self.priority, severity=self.severity)
            events.append(
                event_for(
                    TicketUpdated(
                        ticket_id=ticket_id,
                        change="priority_changed",
                        priority=self.priority,  # type: ignore[arg-type]
                        updated_at=now,
                    ),
                    ticket_id,
                )
            )
        return sets, events


def _offsets(offsets: dict[str, int], alert: Alert) -> dict[str, int]:
    if alert.partition is None or alert.offset is None:
        return dict(offsets)
    key = str(alert.partition)
    return {**offsets, key: max(offsets.get(key, -1), alert.offset)}
