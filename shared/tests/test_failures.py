"""The failure log a reconciler reads: what failed since it last looked, by subject where named."""

from __future__ import annotations

from aftersales.shared import failures as log
from aftersales.shared.failures import failed_since, failures, note_failure


def test_failures_since_a_look_name_their_subjects_or_ask_for_everything() -> None:
    seen, _ = failed_since(0)
    assert failed_since(seen) == (seen, frozenset())
    note_failure("T-1")
    note_failure("T-2", "T-1")
    seen, named = failed_since(seen)
    assert named == {"T-1", "T-2"} and seen == failures()
    note_failure("T-3")
    note_failure()  # one that knows not what it touched
    seen, named = failed_since(seen)
    assert named is None
    assert failed_since(seen) == (seen, frozenset())


def test_a_reader_further_behind_than_the_failures_kept_looks_at_everything() -> None:
    seen, _ = failed_since(0)
    for n in range(log.KEPT + 1):
        note_failure(f"T-{n}")
    assert failed_since(seen) == (failures(), None)
    assert failed_since(failures() - 2) == (failures(), frozenset({f"T-{log.KEPT - 1}", f"T-{log.KEPT}"}))
