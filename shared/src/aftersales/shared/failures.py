"""Failures of this process's handlers (consumer handlers, timer handlers, HTTP requests that ended in
a 5xx or an exception), counted so that a reconciler can tell whether anything may have stopped between
two of its writes since it last looked (a slot taken but its work order not written, a work order
closed but its slot not given back). A crash needs no count: the next process starts by looking at
everything, and its peers learn it is gone from the outbox relay's heartbeat."""

from __future__ import annotations

_failures = 0


def note_failure() -> None:
    """Count one failed handler run of this process."""
    global _failures
    _failures += 1


def failures() -> int:
    """Return how many handler runs of this process failed since it started."""
    return _failures
