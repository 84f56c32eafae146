from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.events import TicketCancelled
from aftersales.shared.envelope import new_event
from aftersales.shared.kafka import RetryPolicy
from aftersales.shared.mongo import merge_updates
from aftersales.shared.outbox import new_with_events, with_events


def test_state_change_and_events_are_one_update() -> None:
    event = new_event(
        TicketCancelled(ticket_id="T", reason="r", cancelled_at=datetime.now(UTC)), source="/s", subject="T"
    )
    update = with_events({"$set": {"status": "cancelled"}}, Topic.TICKETS, [event])
    assert update["$set"] == {"status": "cancelled"}
    [entry] = update["$push"]["outbox"]["$each"]
    assert entry["id"] == event.id and entry["topic"] == "aftersales.tickets.v1"
    doc = new_with_events({"_id": "T"}, Topic.TICKETS, [event])
    assert doc["outbox"][0]["type"] == event.type


def test_merge_refuses_setting_one_field_twice() -> None:
    assert merge_updates({"$set": {"a": 1}}, {"$set": {"b": 2}, "$inc": {"n": 1}}) == {
        "$set": {"a": 1, "b": 2},
        "$inc": {"n": 1},
    }
    with pytest.raises(ValueError, match="twice"):
        merge_updates({"$set": {"a": 1}}, {"$set": {"a": 2}})


def test_retry_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=5, backoff_s=0.5)
    assert [policy.delay_s(a) for a in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert policy.delay_s(20) == 10.0
