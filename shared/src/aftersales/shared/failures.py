"""Failures of this process's handlers (consumer handlers, timer handlers, HTTP requests that ended in
a 5xx or an exception), counted so that a reconciler can tell whether anything may have stopped between
two of its writes since it last looked (a slot taken but its work order not written, a work order
closed but its slot not given back). A crash needs no count: the next process starts by looking at
everything, and its peers learn it is gone from the outbox relay's heartbeat.

A failure names its subjects where it knows them (the keys of the records it was handling, i.e. the
ticket ids; a timer's group), so a reconciler can look at what those touched instead of everything: a
store that times out handlers now and then under load would otherwise have it look at everything, all
the time, at a cost that grows with the data it holds."""

from __future__ import annotations

from collections import deque

KEPT = 1_000  # failures remembered with their subjects; a reader further behind looks at everything

_count = 0
_recent: deque[tuple[int, frozenset[str] | None]] = deque(maxlen=KEPT)


def note_failure(*subjects: str) -> None:
    """Count one failed handler run of this process; `subjects`: what it worked on (none: anything)."""
    global _count
    _count += 1
    _recent.append((_count, frozenset(subjects) if subjects else None))


def failures() -> int:
    """Return how many handler runs of this process failed since it started."""
    return _count


def failed_since(seen: int) -> tuple[int, frozenset[str] | None]:
    """Return the count now and the subjects of the failures counted after `seen`: None when one of
    them named none, or they are not all remembered any more (look at everything then)."""
    now = _count
    if now <= seen:
        return now, frozenset()
    later = [entry for entry in _recent if entry[0] > seen]
    if not later or later[0][0] != seen + 1:
        return now, None
    subjects: set[str] = set()
    for _, named in later:
        if named is None:
            return now, None
        subjects |= named
    return now, frozenset(subjects)
