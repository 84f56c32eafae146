"""The database command listener: every command counted by collection, command and filter kind, and the
time it took summed by collection and command (what an SRE reads to see where a service's database time
goes)."""

from __future__ import annotations

from datetime import timedelta

from pymongo import monitoring

from aftersales.shared.mongo import DB_COMMANDS, DB_SECONDS, CommandCounter

SERVER = ("127.0.0.1", 27017)


def _value(counter: object, **labels: str) -> float:
    for metric in counter.collect():  # type: ignore[attr-defined]
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_commands_are_counted_and_timed_by_collection() -> None:
    listener = CommandCounter("svc-monitoring-test")
    labels = {"service": "svc-monitoring-test", "collection": "tickets", "command": "update"}
    before = _value(DB_SECONDS, **labels)
    update = {"update": "tickets", "updates": [{"q": {"_id": "T-1"}, "u": {"$set": {"a": 1}}}]}
    for request_id, ms, failed in ((1, 4, False), (2, 6, True)):
        listener.started(monitoring.CommandStartedEvent(update, "db", request_id, SERVER, request_id))
        if failed:
            listener.failed(
                monitoring.CommandFailedEvent(
                    timedelta(milliseconds=ms), {"code": 11000}, "update", request_id, SERVER, request_id
                )
            )
        else:
            listener.succeeded(
                monitoring.CommandSucceededEvent(
                    timedelta(milliseconds=ms), {"ok": 1}, "update", request_id, SERVER, request_id
                )
            )
    assert abs(_value(DB_SECONDS, **labels) - before - 0.010) < 1e-9
    assert _value(DB_COMMANDS, **labels, by_id="true") >= 2
    # an outcome without its start (a listener added mid-flight) times nothing
    listener.succeeded(
        monitoring.CommandSucceededEvent(timedelta(seconds=1), {"ok": 1}, "update", 99, SERVER, 99)
    )
    assert abs(_value(DB_SECONDS, **labels) - before - 0.010) < 1e-9
