"""Spare-part stock (备件) rules: stock per location (a technician's van, a grid's warehouse) and part,
received and consumed, never negative, with a low-stock event when it falls to its threshold.

A consumption is written as a conditional decrement: the document must hold at least the quantity, and
its stock must still lie in the band the decision was taken in (above the threshold after, crossing it,
or already at or below it), so the low-stock event is exact without locking out concurrent users: two
consumptions in one band both apply; one that finds the stock moved out of its band re-reads and
decides again.

Unit cost: a delivery may say what one part cost (in 分); the stock keeps the moving average of its
deliveries (weighted by quantity, rounded to the 分), and every consumption carries the average of the
moment it took the parts. Returned parts re-enter at the current average, so returns do not move it; a
delivery without a cost keeps the average. Pure functions, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from aftersales.shared.aggregate import Decision
from aftersales.shared.contracts.fieldwork import StockConsumed, StockLow, StockReceived
from aftersales.shared.errors import Conflict, InvalidRequest

ReceiptReason = Literal["delivery", "returned"]
MAX_UNIT_COST_CENTS = 100_000_000  # one million yuan for one part: anything above is a typo
LOCATION = re.compile(r"^(van|warehouse):([A-Za-z0-9_.-]{1,64})$")


def stock_id(location_id: str, part_id: str) -> str:
    return f"{location_id}:{part_id}"


def van(technician_id: str) -> str:
    return f"van:{technician_id}"


def warehouse(grid_id: str) -> str:
    return f"warehouse:{grid_id}"


def parse_location(location_id: str) -> tuple[str, str]:
    """Return (kind, owner) of `van:<technician>` or `warehouse:<grid>`; 422 for anything else."""
    found = LOCATION.match(location_id)
    if found is None:
        raise InvalidRequest(
            f"location_id: {location_id!r} is neither van:<technician id> nor warehouse:<grid id>",
            field="location_id",
        )
    return found.group(1), found.group(2)


@dataclass(frozen=True, slots=True)
class StockLevel:
    location_id: str
    part_id: str
    on_hand: int = 0
    low_threshold: int = 0
    exists: bool = False
    # Report lines whose parts left this stock but are not on their report yet (`Use.key`): a retry of
    # one finds its parts taken already. Cleared once the line is written, so it holds only work in flight.
    taking: frozenset[str] = frozenset()
    unit_cost_cents: int | None = None  # the moving average of the deliveries' unit costs, if any had one

    @property
    def id(self) -> str:
        return stock_id(self.location_id, self.part_id)


@dataclass(frozen=True, slots=True)
class Band:
    """The stock values a consumption decision holds for: `low <= on_hand <= high` (no upper bound when
    `high` is None), at the threshold it was taken with."""

    low: int
    high: int | None
    threshold: int


def band(before: StockLevel, quantity: int) -> Band:
    """Return the band of stock values in which consuming `quantity` has the same outcome as at `before`."""
    t = before.low_threshold
    if before.on_hand - quantity > t:  # still above the threshold after
        return Band(max(quantity, t + quantity + 1), None, t)
    if before.on_hand > t:  # crosses the threshold
        return Band(max(quantity, t + 1), t + quantity, t)
    return Band(quantity, t, t)  # already low


@dataclass(frozen=True, slots=True)
class Use:
    """What a consumption is for: the report line that uses the parts."""

    report_id: str
    ticket_id: str
    line_id: str

    @property
    def key(self) -> str:
        return f"{self.report_id}:{self.line_id}"


def consume(before: StockLevel, quantity: int, use: Use, now: datetime) -> Decision[StockLevel]:
    """Return the stock after `quantity` parts left it for a report line (unchanged when they left it for
    that line already: a retry); 409 naming the part when there are not enough (never negative)."""
    if quantity < 1:
        raise InvalidRequest("quantity: at least 1", field="quantity")
    if use.key in before.taking:
        return Decision(before)
    if before.on_hand < quantity:
        raise Conflict(
            f"parts: {before.on_hand} of part {before.part_id} on hand at {before.location_id}, "
            f"{quantity} needed",
            field="parts",
        )
    after = replace(before, on_hand=before.on_hand - quantity, taking=before.taking | {use.key})
    common = {"location_id": before.location_id, "part_id": before.part_id, "occurred_at": now}
    events: list[object] = [
        StockConsumed(**common, quantity=quantity, unit_cost_cents=before.unit_cost_cents, **_use(use))
    ]
    if after.on_hand <= before.low_threshold < before.on_hand:
        events.append(StockLow(**common, threshold=before.low_threshold))
    return Decision(after, tuple(events))


def _use(use: Use) -> dict[str, str]:
    return {"report_id": use.report_id, "ticket_id": use.ticket_id, "line_id": use.line_id}


def average_cost(before: StockLevel, quantity: int, unit_cost_cents: int | None) -> int | None:
    """Return the stock's unit cost after `quantity` parts arrived at `unit_cost_cents` (None: unknown):
    the average weighted by quantity, rounded half up to the 分."""
    if unit_cost_cents is None:
        return before.unit_cost_cents
    if unit_cost_cents < 0 or unit_cost_cents > MAX_UNIT_COST_CENTS:
        raise InvalidRequest(f"unit_cost_cents: between 0 and {MAX_UNIT_COST_CENTS}", field="unit_cost_cents")
    held = max(before.on_hand, 0)
    if before.unit_cost_cents is None or held == 0:
        return unit_cost_cents
    total = held * before.unit_cost_cents + quantity * unit_cost_cents
    return (2 * total + held + quantity) // (2 * (held + quantity))


@dataclass(frozen=True, slots=True)
class Receipt:
    """Parts arriving: a delivery (optionally with its unit cost) or parts returned from a report line."""

    quantity: int
    reason: ReceiptReason = "delivery"
    threshold: int | None = None
    unit_cost_cents: int | None = None  # a delivery's cost of one part
    returned_from: Use | None = None  # the report line the parts come back from


def receive(before: StockLevel, receipt: Receipt, now: datetime) -> Decision[StockLevel]:
    """Return the stock after parts arrived (a delivery, or parts returned from a report)."""
    quantity, threshold = receipt.quantity, receipt.threshold
    if quantity < 1:
        raise InvalidRequest("quantity: at least 1", field="quantity")
    delivered_cost = receipt.unit_cost_cents if receipt.reason == "delivery" else None
    after = replace(
        before,
        on_hand=before.on_hand + quantity,
        low_threshold=before.low_threshold if threshold is None else threshold,
        exists=True,
        unit_cost_cents=average_cost(before, quantity, delivered_cost),
    )
    origin = {} if receipt.returned_from is None else _use(receipt.returned_from)
    event = StockReceived(
        location_id=before.location_id,
        part_id=before.part_id,
        quantity=quantity,
        reason=receipt.reason,
        occurred_at=now,
        unit_cost_cents=delivered_cost,
        **origin,
    )
    return Decision(after, (event,))
