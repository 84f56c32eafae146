"""What on-site work (fieldwork's events) does to a work order's resolution clock: waits for parts and visit
windows the customer chose, kept per round as facts. Whether they pause the clock is the SLA policy's
`pause_on`, applied whenever the clock is planned. Pure, no I/O.

Every rule is decided by the events' `occurred_at`, never by their arrival order: a duplicate changes
nothing, an event older than what a record already holds changes nothing, and a resume that arrives
before its wait closes the wait when it comes (the clock is never left paused by a lost order)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from aftersales.shared.calendar import Pause

PauseOn = Literal["customer", "parts"]
PARTS: PauseOn = "parts"
CUSTOMER: PauseOn = "customer"
WAITING_FOR_PARTS = "waiting_for_parts"
CUSTOMER_WINDOW = "customer_window"
MAX_PARTS_PAUSES = 50  # ended waits kept per round: the document stays bounded
MAX_WINDOWS = 20  # appointments kept per round


class TooManyHolds(ValueError):
    """A round has more parts waits or appointments than a work order keeps (the event goes to the DLQ)."""


@dataclass(frozen=True, slots=True)
class PartsWait:
    """The work order's waits for parts (备件) this round."""

    since: datetime | None = None  # an open wait: its waiting-for-parts event's time
    part_id: str | None = None
    last_resume_at: datetime | None = None  # the newest check-in or signed report seen
    resume_used: bool = True  # False: that resume closed no wait (its wait may still arrive, late)
    pauses: tuple[tuple[datetime, datetime], ...] = ()  # ended waits


@dataclass(frozen=True, slots=True)
class VisitWindow:
    """One appointment as routing needs it: who chose its window, and the customer time it makes."""

    appointment_id: str
    at: datetime  # occurred_at of the newest event applied to it
    chosen_by: str  # "customer" or "desk"
    booked_at: datetime
    window_start: datetime
    pause_end: datetime | None = None  # customer time is [booked_at, pause_end); None: none
    cancelled: bool = False


@dataclass(frozen=True, slots=True)
class FieldHolds:
    """Parts waits and visit windows of one round; `version` guards their writes."""

    version: int = 0
    parts: PartsWait = PartsWait()
    windows: tuple[VisitWindow, ...] = ()


# ------------------------------------------------------------------------------- parts


def parts_waiting(holds: FieldHolds, at: datetime, part_id: str) -> FieldHolds | None:
    """Return the holds after a waiting-for-parts event at `at`, or None when it changes nothing."""
    parts = holds.parts
    if parts.last_resume_at is not None and at <= parts.last_resume_at:
        if parts.resume_used or any(start == at for start, _ in parts.pauses):
            return None  # a duplicate of a wait already ended, or older than an ended one
        # The resume came first: this wait ran from `at` to that resume.
        ended = _append(parts.pauses, (at, parts.last_resume_at))
        return replace(holds, parts=replace(parts, resume_used=True, pauses=ended))
    if parts.since is not None and at >= parts.since:
        return None  # already waiting (a duplicate, or another part of the same wait)
    return replace(holds, parts=replace(parts, since=at, part_id=part_id))


def work_resumed(holds: FieldHolds, at: datetime) -> FieldHolds | None:
    """Return the holds after the technician checked in on site or a report was signed at `at` (work goes
    on, so the parts are there), or None when it changes nothing."""
    parts = holds.parts
    if parts.since is not None and at > parts.since:
        ended = _append(parts.pauses, (parts.since, at))
        return replace(holds, parts=PartsWait(last_resume_at=at, resume_used=True, pauses=ended))
    if parts.last_resume_at is not None and at <= parts.last_resume_at:
        return None  # a duplicate or an older resume
    # No wait open before it (yet): kept, so a wait that arrives late but began earlier ends here.
    return replace(holds, parts=replace(parts, last_resume_at=at, resume_used=False))


def _append(
    pauses: tuple[tuple[datetime, datetime], ...], pause: tuple[datetime, datetime]
) -> tuple[tuple[datetime, datetime], ...]:
    if len(pauses) >= MAX_PARTS_PAUSES:
        raise TooManyHolds(f"more than {MAX_PARTS_PAUSES} waits for parts in one round")
    return tuple(sorted((*pauses, pause)))


# ------------------------------------------------------------------------------- visit windows


def window_of(holds: FieldHolds, appointment_id: str) -> VisitWindow | None:
    return next((w for w in holds.windows if w.appointment_id == appointment_id), None)


def window_chosen(
    holds: FieldHolds,
    *,
    appointment_id: str,
    at: datetime,
    chosen_by: str | None,
    window_start: datetime,
    due_without: datetime | None,
) -> FieldHolds | None:
    """Return the holds after an appointment was booked or rescheduled at `at`, or None if that changes
    nothing. A window the customer chose that starts after `due_without` (the resolution due time
    without this appointment's customer time) is customer time from the booking to the window's start;
    a window chosen by the desk ends any customer time of the appointment at `at`. A reschedule that
    does not say who chose keeps the booking's chooser."""
    before = window_of(holds, appointment_id)
    if before is not None and (at <= before.at or before.cancelled):
        return None
    chooser = chosen_by or (before.chosen_by if before else "desk")
    booked_at = before.booked_at if before else at
    if chooser == "customer" and due_without is not None and window_start > due_without:
        pause_end: datetime | None = window_start
    else:
        pause_end = _cut(before, at)
    after = VisitWindow(appointment_id, at, chooser, booked_at, window_start, pause_end)
    return _put(holds, after)


def window_cancelled(holds: FieldHolds, *, appointment_id: str, at: datetime) -> FieldHolds | None:
    """Return the holds after an appointment was called off at `at`: its customer time ends then. A
    cancellation that overtook its booking leaves a record the booking cannot change."""
    before = window_of(holds, appointment_id)
    if before is None:
        return _put(holds, VisitWindow(appointment_id, at, "desk", at, at, None, cancelled=True))
    if before.cancelled or at <= before.at:
        return None
    return _put(holds, replace(before, at=at, pause_end=_cut(before, at), cancelled=True))


def _cut(before: VisitWindow | None, at: datetime) -> datetime | None:
    """Return the end of an appointment's customer time cut at `at` (what already passed stays)."""
    if before is None or before.pause_end is None:
        return None
    end = min(before.pause_end, at)
    return end if end > before.booked_at else None


def _put(holds: FieldHolds, window: VisitWindow) -> FieldHolds:
    others = tuple(w for w in holds.windows if w.appointment_id != window.appointment_id)
    if len(others) >= MAX_WINDOWS:
        raise TooManyHolds(f"more than {MAX_WINDOWS} appointments in one round")
    return replace(holds, windows=(*others, window))


# ------------------------------------------------------------------------------- what pauses the clock


def resolution_pauses(
    holds: FieldHolds, pause_on: Collection[str], *, exclude_appointment: str | None = None
) -> list[Pause]:
    """Return the pauses of the resolution clock that on-site work makes under the policy's `pause_on`."""
    out: list[Pause] = []
    if PARTS in pause_on:
        out += list(holds.parts.pauses)
        if holds.parts.since is not None:
            out.append((holds.parts.since, None))
    if CUSTOMER in pause_on:
        out += [
            (w.booked_at, w.pause_end)
            for w in holds.windows
            if w.pause_end is not None and w.appointment_id != exclude_appointment
        ]
    return out


def pending_reason(status: str, holds: FieldHolds, now: datetime) -> tuple[str | None, datetime | None]:
    """Return why the work order waits now (`customer`, `waiting_for_parts`, `customer_window`) and, for a
    customer-chosen window, until when; (None, None) when it does not wait."""
    if status == "pending_customer":
        return "customer", None
    if holds.parts.since is not None:
        return WAITING_FOR_PARTS, None
    for w in holds.windows:
        if w.pause_end is not None and w.booked_at <= now < w.pause_end:
            return CUSTOMER_WINDOW, w.pause_end
    return None, None


# ------------------------------------------------------------------------------- stored shape


def holds_of(doc: Mapping[str, Any] | None) -> FieldHolds:
    """Return the holds stored on a work order (none stored: no holds)."""
    if not doc:
        return FieldHolds()
    p = doc.get("parts") or {}
    parts = PartsWait(
        since=p.get("since"),
        part_id=p.get("part_id"),
        last_resume_at=p.get("last_resume_at"),
        resume_used=bool(p.get("resume_used", True)),
        pauses=tuple((x["start"], x["end"]) for x in p.get("pauses", [])),
    )
    windows = tuple(
        VisitWindow(
            appointment_id=w["appointment_id"],
            at=w["at"],
            chosen_by=w["chosen_by"],
            booked_at=w["booked_at"],
            window_start=w["window_start"],
            pause_end=w.get("pause_end"),
            cancelled=bool(w.get("cancelled")),
        )
        for w in doc.get("windows", [])
    )
    return FieldHolds(version=int(doc.get("version") or 0), parts=parts, windows=windows)


def holds_fields(holds: FieldHolds) -> dict[str, Any]:
    """Return the holds shaped as stored on the work order."""
    p = holds.parts
    return {
        "version": holds.version,
        "parts": {
            "since": p.since,
            "part_id": p.part_id,
            "last_resume_at": p.last_resume_at,
            "resume_used": p.resume_used,
            "pauses": [{"start": a, "end": b} for a, b in p.pauses],
        },
        "windows": [
            {
                "appointment_id": w.appointment_id,
                "at": w.at,
                "chosen_by": w.chosen_by,
                "booked_at": w.booked_at,
                "window_start": w.window_start,
                "pause_end": w.pause_end,
                "cancelled": w.cancelled,
            }
            for w in holds.windows
        ],
    }
