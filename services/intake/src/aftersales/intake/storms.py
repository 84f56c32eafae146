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
  claimed by anything else, it is a replay and changes nothing. A consumed batch claims the keys of all
  its storms at once, before any storm folds.
A key is claimed before the fold is written, so a crash in between makes a retried HTTP alert count as a
replay of itself: the storm's `alert_count` may then be one short, and no ticket is ever lost (a replayed
first alert of a storm with no open ticket opens it).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

from aftersales.intake import domain, messages, metrics
from aftersales.intake.domain import Appended, Ticket, TicketDecision
from aftersales.intake.rules import Classification
from aftersales.intake.store import KeyClaim, TicketStore
from aftersales.shared.aggregate import Decision
from aftersales.shared.contracts.common import Priority
from aftersales.shared.contracts.requests import TicketRequest
from aftersales.shared.errors import Conflict, RetryLater

PRIORITY_ORDER = ["P1", "P2", "P3", "P4"]
MAX_ROUNDS = 200

Outcome = Literal["created", "merged", "replayed"]
Folded = tuple[Ticket, Outcome]


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


NewTicket = Callable[[Alert], Ticket]


class Storms:
    def __init__(self, store: TicketStore, *, window_s: float, new_ticket: NewTicket):
        self.store = store
        self.window_s = window_s
        self._new_ticket = new_ticket

    async def absorb(
        self, storm: str, alerts: Sequence[Alert], replayed: Collection[int] | None = None
    ) -> list[Folded]:
        """Fold a storm's alerts (in order); return (ticket, "created"|"merged"|"replayed") for each.

        `replayed` holds the positions of the alerts `replays` already found repeating an earlier request
        (a consumed batch claims the keys of all its storms in one write); None: their keys are claimed
        here."""
        if replayed is None:
            replayed = await self.replays(alerts)
        fresh = [a for i, a in enumerate(alerts) if i not in replayed]
        results: dict[int, Folded] = {}
        if fresh:
            folded = await self._fold(storm, fresh)
            for alert, outcome in zip(fresh, folded, strict=True):
                results[id(alert)] = outcome
        out: list[Folded] = []
        for i, alert in enumerate(alerts):
            if i in replayed:
                ticket = await self.store.open_storm(storm)
                if ticket is None:  # the replayed alert's storm has no ticket: a crash lost the first one
                    [(ticket, _)] = await self._fold(storm, [alert])
                metrics.TICKETS_REPLAYED.labels(alert.source).inc()
                out.append((ticket, "replayed"))
            else:
                out.append(results[id(alert)])
        return out

    async def replays(self, alerts: Sequence[Alert]) -> set[int]:
        """Claim the alerts' keys (one write, whatever their storms); return the indexes of alerts that
        replay an earlier request."""
        keyed = [(i, a) for i, a in enumerate(alerts) if a.key is not None]
        if not keyed:
            return set()
        now = datetime.now(UTC)
        claims = [KeyClaim(a.key, a.partition, a.offset, a.fingerprint, now) for _, a in keyed if a.key]
        taken = await self.store.claim_request_keys(claims)
        replays: set[int] = set()
        for position in taken:
            i, alert = keyed[position]
            assert alert.key is not None
            holder = await self.store.request_key(alert.key)
            if holder is not None and holder.fingerprint not in (None, alert.fingerprint):
                raise Conflict(
                    "this Idempotency-Key was already used for a different request; use a new key",
                    field="Idempotency-Key",
                )
            same_record = (
                holder is not None
                and alert.partition is not None
                and (holder.partition, holder.offset) == (alert.partition, alert.offset)
            )
            if not same_record:
                replays.add(i)
        return replays

    async def _fold(self, storm: str, alerts: Sequence[Alert]) -> list[Folded]:
        """Fold the alerts round by round: each round folds a prefix into the storm's current ticket
        (or opens it), so a lost race re-reads and goes on from where it stopped."""
        outcomes: list[Folded] = []
        todo = list(alerts)
        look_everywhere = False
        for _ in range(MAX_ROUNDS):
            if not todo:
                return outcomes
            ticket = await self.store.open_storm(storm, look_everywhere=look_everywhere)
            done = await self._fold_into(storm, ticket, todo, outcomes)
            # Opening the storm's ticket collided with one that has no pointer: look for it by key.
            look_everywhere = ticket is None and done == 0
            todo = todo[done:]
        raise RetryLater("alert storm kept changing; try again")

    async def _fold_into(
        self, storm: str, ticket: Ticket | None, alerts: Sequence[Alert], outcomes: list[Folded]
    ) -> int:
        """Fold a prefix of `alerts` into `ticket` (or open the storm's ticket); return how many were done."""
        if ticket is None:
            return await self._open(storm, alerts[0], outcomes)
        merge = _Merge(ticket)
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
            released = replace(ticket, storm_key=domain.released_storm_key(ticket.id))
            await self.store.write(ticket, Decision(released))
            return 0
        after = ticket
        if merge.count > merge.base_count:
            decision = merge.decided()
            if not await self.store.write(ticket, decision):
                return 0  # lost a race with another writer: re-read and fold these again
            metrics.TICKETS_MERGED.labels(alerts[0].request.channel.value).inc(merge.count - merge.base_count)
            after = decision.state
        outcomes.extend((after, "merged") for _ in range(taken))
        return taken

    async def _open(self, storm: str, alert: Alert, outcomes: list[Folded]) -> int:
        """Open the storm's ticket with its first alert; return 1, or 0 when another writer opened it."""
        ticket = replace(self._new_ticket(alert), storm_key=storm, request_offsets=_offsets({}, alert))
        # The storm's pointer first: whatever happens to the insert below, the next round finds the
        # ticket by `_id` (a look-up by storm key scans the tickets on FerretDB).
        opened_as = await self.store.claim_storm(storm, ticket.id)
        if opened_as is None:
            return 0  # the storm has a ticket, or another writer is opening one: re-read it
        if opened_as != ticket.id:
            ticket = replace(ticket, id=opened_as)
        if not await self.store.insert(ticket, [messages.created(ticket)]):
            return 0  # another writer opened this storm meanwhile: fold into its ticket
        metrics.TICKETS_CREATED.labels(
            ticket.channel.value, ticket.category.value, ticket.priority.value
        ).inc()
        outcomes.append((ticket, "created"))
        return 1


class _Merge:
    """The in-memory fold of several alerts into one storm ticket."""

    def __init__(self, ticket: Ticket) -> None:
        assert ticket.first_seen is not None and ticket.last_seen is not None
        self.ticket = ticket
        self.base_count = int(ticket.alert_count or 1)
        self.count = self.base_count
        self.first: datetime = ticket.first_seen
        self.last: datetime = ticket.last_seen
        self.offsets: dict[str, int] = dict(ticket.request_offsets)
        self.priority: str = ticket.priority.value
        self.severity = ticket.severity
        self.raised_by: Classification | None = None  # the alert that raised the priority, if any

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
            self.raised_by = alert.decided

    def decided(self) -> TicketDecision:
        """Return the ticket after the whole fold, with its events and timeline entries: one for the
        fold, one more when an alert raised the priority (its rules are then the ones that matched)."""
        now = datetime.now(UTC)
        merged = {
            "at": now,
            "type": "ticket.merged",
            "source": "intake",
            "alert_count": self.count,
            "alerts_added": self.count - self.base_count,
        }
        after = replace(
            self.ticket,
            alert_count=self.count,
            first_seen=self.first,
            last_seen=self.last,
            request_offsets=self.offsets,
            updated_at=now,
            appended=Appended(timeline=(merged,)),
        )
        if self.raised_by is None:
            return TicketDecision(after, (messages.merged(after),))
        raised = {
            "at": now,
            "type": "ticket.priority_changed",
            "source": "intake",
            "priority": self.priority,
            "previous_priority": self.ticket.priority.value,
        }
        after = replace(
            after,
            priority=Priority(self.priority),
            severity=self.severity,
            matched_rules=self.raised_by.matched,
            rules_version=self.raised_by.rules_version,
            appended=Appended(timeline=(merged, raised)),
        )
        return TicketDecision(after, (messages.merged(after), messages.priority_changed(after, now)))


def _offsets(offsets: Mapping[str, int], alert: Alert) -> dict[str, int]:
    if alert.partition is None or alert.offset is None:
        return dict(offsets)
    key = str(alert.partition)
    return {**offsets, key: max(offsets.get(key, -1), alert.offset)}
