"""No technician over capacity, judged from the event history rather than from the final counters.

Each ticket round's holders are read from its assignment events in the order routing published them
(one partition per ticket): `assigned` gives the work order to a technician, `reassigned` and an
`escalated` with a `to_technician_id` move it (an escalation to the supervisor leaves it where it is),
`resolved` frees it; a ticket's `cancelled` or `closed` frees whatever its last round holds then
(routing publishes nothing for those). That gives every technician a list of intervals; a sweep in
time order finds when he held more than his capacity.

Events are stamped when their handler starts deciding, and the slot is taken or freed a little later,
so an acquire may carry an earlier stamp than the release whose slot it took (two handlers on
different partitions). Such an excess lasts at most as long as a handler may run before its write;
an excess that lasts longer than `allowance_s` (the handler timeout and a margin) is a real one. An
excess still open at the end of the history (nothing frees it) always counts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

FOREVER = datetime.max.replace(tzinfo=UTC)


@dataclass
class Excess:
    technician_id: str
    held: int
    capacity: int
    start: datetime
    end: datetime | None  # None: still over at the end of the history

    @property
    def seconds(self) -> float:
        return float("inf") if self.end is None else (self.end - self.start).total_seconds()


@dataclass
class CapacityHistory:
    peak: dict[str, int] = field(default_factory=dict)  # the most each technician held at once
    excesses: list[Excess] = field(default_factory=list)  # every time one held more than his capacity

    def over(self, allowance_s: float) -> list[Excess]:
        return [e for e in self.excesses if e.seconds > allowance_s]


def _when(d: Mapping[str, Any], *keys: str) -> datetime:
    for key in keys:
        if d.get(key):
            return datetime.fromisoformat(str(d[key]))
    raise KeyError(f"none of {keys} in {sorted(d)}")


def holder_intervals(
    assignments: Iterable[tuple[Mapping[str, str], Mapping[str, Any]]],
    tickets: Iterable[tuple[Mapping[str, str], Mapping[str, Any]]],
) -> dict[str, list[tuple[datetime, datetime]]]:
    """Per technician, the [from, to) intervals in which he held a work order."""
    ended: dict[str, datetime] = {}
    for h, d in tickets:
        kind = h.get("ce_type", "")
        if kind in ("aftersales.ticket.cancelled.v1", "aftersales.ticket.closed.v1"):
            ended.setdefault(d["ticket_id"], _when(d, "cancelled_at", "closed_at"))
    held: dict[tuple[str, int], tuple[str, datetime]] = {}  # (ticket, round) -> (holder, since)
    last_seen: dict[tuple[str, int], datetime] = {}
    out: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)

    def free(work: tuple[str, int], at: datetime) -> None:
        if work in held:
            tech, since = held.pop(work)
            out[tech].append((since, max(at, since)))

    for h, d in assignments:
        kind = h.get("ce_type", "").removeprefix("aftersales.assignment.").removesuffix(".v1")
        if kind not in ("assigned", "reassigned", "escalated", "resolved"):
            continue
        work, at = (str(d["ticket_id"]), int(d.get("round", 1))), _when(d, "occurred_at")
        last_seen[work] = max(at, last_seen.get(work, at))
        to_key = "technician_id" if kind == "assigned" else "to_technician_id"
        to = None if kind == "resolved" else d.get(to_key)
        if kind == "escalated" and not to:
            continue  # to the supervisor: the technician keeps it
        free(work, at)
        if to:
            held[work] = (str(to), at)
    for work, (tech, since) in held.items():
        end = ended.get(work[0])
        # Routing may assign before it reads the cancellation: the slot is then held until it does,
        # which the history cannot date; counted as freed at the later of the two stamps.
        out[tech].append((since, FOREVER if end is None else max(end, last_seen[work])))
    return out


def capacity_history(
    intervals: Mapping[str, list[tuple[datetime, datetime]]], capacity: Mapping[str, int]
) -> CapacityHistory:
    """Sweep each technician's intervals in time order (frees before takes at the same instant)."""
    result = CapacityHistory()
    for tech, spans in intervals.items():
        points = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])  # -1 sorts first
        held = peak = 0
        cap = capacity.get(tech, 0)
        current: Excess | None = None
        for at, step in points:
            held += step
            peak = max(peak, held)
            if held > cap and current is None:
                current = Excess(tech, held, cap, at, None)
            elif held > cap and current is not None:
                current.held = max(current.held, held)
            elif held <= cap and current is not None:
                current.end = None if at == FOREVER else at
                result.excesses.append(current)
                current = None
        if current is not None:
            result.excesses.append(current)
        result.peak[tech] = peak
    return result
