"""Driving follow-up through its inputs: intake's ticket facts and routing's resolutions, produced as
contract events (the services that publish them are not running in these tests)."""

from __future__ import annotations

from datetime import UTC, datetime

from harness import Platform, mongo, produce, unique, wait_until
from pydantic import BaseModel

from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.common import Category, Channel, CustomerTier, Priority
from aftersales.shared.contracts.events import TicketCreated, WorkOrderResolved
from aftersales.shared.envelope import new_event

INTAKE, ROUTING = "/aftersales/intake", "/aftersales/routing"
ZONE = "Asia/Shanghai"
# Whether a visit falls due now must not depend on the hour or weekday the suite runs at: the desk's
# hours and days cover the whole week and the do-not-disturb window is empty (start == end), except
# in the test of that window, which reschedules to a fixed local hour instead of "now".
AROUND_THE_CLOCK = {
    "DO_NOT_DISTURB_START": "00:00",
    "DO_NOT_DISTURB_END": "00:00",
    "BUSINESS_HOURS_OPEN": "00:00",
    "BUSINESS_HOURS_CLOSE": "23:59:59.999999",
    "BUSINESS_DAYS": "[0,1,2,3,4,5,6]",
}


async def send(platform: Platform, topic: Topic, model: BaseModel, ticket_id: str, source: str) -> str:
    event = new_event(model, source=source, subject=ticket_id)
    await produce(
        platform.infra, platform.topic(topic), event.value(), key=event.key, headers=event.headers()
    )
    return event.id


def created(ticket_id: str, tz: str, *, tier: CustomerTier, category: Category) -> TicketCreated:
    return TicketCreated(
        ticket_id=ticket_id,
        channel=Channel.PHONE,
        category=category,
        priority=Priority.P2,
        customer_id=f"C-{ticket_id}",
        customer_tier=tier,
        customer_timezone=tz,
        region_code="310000/310100/310104",
        device_type="washing_machine",
        product_model="WM-200",
        created_at=datetime.now(UTC),
        rules_version="test",
    )


def resolved(ticket_id: str, round_: int, category: Category) -> WorkOrderResolved:
    return WorkOrderResolved(
        ticket_id=ticket_id,
        grid_id="grid-7",
        round=round_,
        occurred_at=datetime.now(UTC),
        technician_id="tech-42",
        resolution_code="replaced_part",
        priority=Priority.P2,
        category=category,
    )


async def resolve_a_standard_ticket(platform: Platform) -> str:
    """Create a fresh ticket of a standard-tier customer in `ZONE` (a software fault: a callback only) and
    resolve it in round 1, as intake and routing would; return the ticket id.

    The resolution is sent once follow-up holds the ticket's facts, as it would in production (a ticket
    is resolved long after it is created). Sent at once, the two topics race: a resolution folded first
    plans its visits with the default zone (UTC), which the do-not-disturb test then sees."""
    ticket = unique("T-")
    facts = created(ticket, ZONE, tier=CustomerTier.STANDARD, category=Category.SOFTWARE_FAULT)
    await send(platform, Topic.TICKETS, facts, ticket, INTAKE)
    client = mongo(platform.infra)
    try:
        tickets = client[platform.database("followup")]["tickets"]
        await wait_until(
            "follow-up holding the ticket's facts",
            lambda: tickets.find_one({"_id": ticket, "customer_id": {"$exists": True}}),
        )
    finally:
        await client.close()
    await send(platform, Topic.ASSIGNMENTS, resolved(ticket, 1, Category.SOFTWARE_FAULT), ticket, ROUTING)
    return ticket
