"""Every consumed (service, topic) subscription has a dead-letter path: a malformed message lands in
`<topic>.dlq` naming the consumer group that parked it, and the partition moves on to the next event.
Event types outside the contract are counted, not parked (except on intake's requests topic, where
only requests belong). All six services run once, as real processes, for the whole module."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import RecordMetadata, TopicPartition
from harness import (
    Infra,
    Platform,
    ServiceProcess,
    headers_of,
    produce,
    read_to_end,
    read_topic,
    start_infra,
    unique,
    wait_until,
)
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel
from test_intake import request_event, ticket_body

from aftersales.shared.contracts import Topic, dead_letter_topic
from aftersales.shared.contracts.events import SurveySent, TicketCancelled, VisitCancelled, WorkOrderAccepted
from aftersales.shared.envelope import CloudEvent, new_event

pytestmark = pytest.mark.expect_dlq("one malformed message per subscription, and an unknown request type")

# (service, topic, consumer group): every subscription the services register.
SUBSCRIPTIONS = [
    ("intake", Topic.REQUESTS, "aftersales-intake-requests"),
    ("intake", Topic.ASSIGNMENTS, "aftersales-intake-readmodel"),
    ("intake", Topic.FOLLOWUPS, "aftersales-intake-readmodel"),
    ("intake", Topic.FEEDBACK, "aftersales-intake-readmodel"),
    ("routing", Topic.TICKETS, "aftersales-routing"),
    ("followup", Topic.TICKETS, "aftersales-followup"),
    ("followup", Topic.ASSIGNMENTS, "aftersales-followup"),
    ("feedback", Topic.TICKETS, "aftersales-feedback"),
    ("feedback", Topic.ASSIGNMENTS, "aftersales-feedback"),
    ("feedback", Topic.FEEDBACK, "aftersales-feedback"),
    ("metrics", Topic.TICKETS, "aftersales-metrics"),
    ("metrics", Topic.ASSIGNMENTS, "aftersales-metrics"),
    ("metrics", Topic.FOLLOWUPS, "aftersales-metrics"),
    ("metrics", Topic.FEEDBACK, "aftersales-metrics"),
    ("notify", Topic.TICKETS, "aftersales-notify"),
    ("notify", Topic.ASSIGNMENTS, "aftersales-notify"),
    ("notify", Topic.FEEDBACK, "aftersales-notify"),
]
MALFORMED = b"{not json"


def good_event(topic: Topic, key: str) -> CloudEvent:
    """A valid event every subscriber of `topic` handles (for a ticket nobody knows: a no-op or a fact)."""
    now = datetime.now(UTC)
    if topic is Topic.REQUESTS:
        return request_event(
            ticket_body(channel="email", external_ref=key), key=key, source="/gateways/email"
        )
    model: BaseModel
    if topic is Topic.TICKETS:
        model = TicketCancelled(ticket_id=key, reason="dead-letter test", cancelled_at=now)
    elif topic is Topic.ASSIGNMENTS:
        model = WorkOrderAccepted(ticket_id=key, grid_id="G-1", occurred_at=now, technician_id="tech-1")
    elif topic is Topic.FOLLOWUPS:
        visit = {"visit_id": f"V-{key}", "ticket_id": key, "kind": "callback", "occurred_at": now}
        model = VisitCancelled(**visit, reason="dead-letter test")
    else:
        model = SurveySent(
            survey_id=f"SV-{key}", ticket_id=key, round=1, expires_at=now + timedelta(days=1), occurred_at=now
        )
    return new_event(model, source="/test", subject=key)


@pytest.fixture(scope="module")
async def stack() -> AsyncIterator[Platform]:
    started: list[ServiceProcess] = []
    platform = Platform(start_infra(), started)
    try:
        await platform.start_ready(
            "intake", "routing", "followup", "feedback", "metrics", "notify", PUBLISH_REPORTS="false"
        )
        yield platform
    finally:
        codes = {proc.name: proc.terminate(timeout_s=15) for proc in started}
    assert codes == dict.fromkeys(codes, 0), f"not every service shut down cleanly: {codes}"


async def send(infra: Infra, topic: str, event: CloudEvent) -> RecordMetadata:
    return await produce(infra, topic, event.value(), key=event.key, headers=event.headers())


async def committed_past(infra: Infra, group: str, topic: str, partition: int, offset: int) -> bool:
    """True once `group` committed a position after `offset` on the partition (it is done with it)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    position = offsets.get(TopicPartition(topic, partition))
    return position is not None and position.offset > offset


def parked_by(group: str, key: bytes) -> Any:
    return lambda r: r.key == key and headers_of(r).get("dlq_consumer_group") == group


@pytest.mark.parametrize(
    ("service", "topic", "group"), SUBSCRIPTIONS, ids=[f"{s}-{t.name.lower()}" for s, t, _ in SUBSCRIPTIONS]
)
async def test_a_malformed_message_is_parked_by_the_group_and_the_partition_moves_on(
    stack: Platform, service: str, topic: Topic, group: str
) -> None:
    infra, physical, group = (
        stack.infra,
        stack.topic(topic),
        stack.topic(group),
    )  # groups carry the prefix too
    key = unique(f"DL-{service}-")
    bad = await produce(infra, physical, MALFORMED, key=key.encode())
    good = good_event(topic, key)
    after = await send(infra, physical, good)
    assert after.partition == bad.partition  # one key, one partition: the good event waits behind the bad

    [record] = await read_topic(
        infra, dead_letter_topic(physical), expect=1, where=parked_by(group, key.encode())
    )
    h = headers_of(record)
    assert record.value == MALFORMED  # kept as it came, for a redrive
    assert (h["dlq_kind"], h["dlq_original_topic"], h["dlq_original_partition"]) == (
        "poison",
        physical,
        str(bad.partition),
    )
    assert h["dlq_original_offset"] == str(bad.offset) and "not a CloudEvent" in h["dlq_reason"]

    await wait_until(
        f"{group} past the good event on {physical}",
        lambda: committed_past(infra, group, physical, after.partition, after.offset),
    )
    parked = await read_to_end(infra, dead_letter_topic(physical), where=parked_by(group, key.encode()))
    assert [headers_of(r).get("ce_id") for r in parked] == [None]  # handled, not parked


def ignored(metrics_text: str, topic: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == "aftersales_events_ignored_total"
        and sample.labels == {"topic": topic, "reason": "unknown_type"}
    )


async def test_an_unknown_event_type_is_counted_by_every_subscriber_and_parked_only_on_requests(
    stack: Platform,
) -> None:
    infra, tickets = stack.infra, stack.topic(Topic.TICKETS)
    key = unique("UT-")
    unknown = CloudEvent(
        type="aftersales.ticket.teleported.v1", source="/test", subject=key, data={"ticket_id": key}
    )
    at = await send(infra, tickets, unknown)
    subscribers = [(s, stack.topic(g)) for s, t, g in SUBSCRIPTIONS if t is Topic.TICKETS]
    for _, group in subscribers:
        await wait_until(
            f"{group} past the unknown event",
            lambda group=group: committed_past(infra, group, tickets, at.partition, at.offset),
        )
    async with httpx.AsyncClient(timeout=10) as client:
        for service, _ in subscribers:
            text = (await client.get(f"{stack.url(service)}/metrics")).text
            assert ignored(text, tickets) == 1.0, service
    assert await read_to_end(infra, dead_letter_topic(tickets), where=lambda r: r.key == key.encode()) == []

    # On the requests topic only requests belong: anything else is parked, with the reason.
    requests = stack.topic(Topic.REQUESTS)
    stray = CloudEvent(
        type="aftersales.ticket.teleported.v1", source="/test", subject=key, data={"ticket_id": key}
    )
    await send(infra, requests, stray)
    [record] = await read_topic(
        infra,
        dead_letter_topic(requests),
        expect=1,
        where=parked_by(stack.topic("aftersales-intake-requests"), key.encode()),
    )
    assert headers_of(record)["ce_id"] == stray.id and "teleported" in headers_of(record)["dlq_reason"]
