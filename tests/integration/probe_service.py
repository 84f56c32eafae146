"""A minimal service built only from `aftersales.shared`, run as a real process by the foundation tests.

POST /notes writes a note and its event in one atomic update (outbox); the consumer applies every event
of the tickets topic to a tally exactly once. CRASH_POINT makes the process SIGKILL itself at a chosen
moment: `before_publish` (after the document write, before the broker has the event) or `after_apply`
(after the consumer's effect is durable, before the offset commit).
"""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.events import TicketCancelled
from aftersales.shared.envelope import CloudEvent, new_event
from aftersales.shared.http import create_app
from aftersales.shared.idempotency import apply_once
from aftersales.shared.kafka import subscribe
from aftersales.shared.main import run_service
from aftersales.shared.outbox import new_with_events
from aftersales.shared.runtime import RuntimeSpec, ServiceRuntime
from aftersales.shared.settings import ServiceSettings


class ProbeSettings(ServiceSettings):
    service_name: str = "probe"
    crash_point: str = ""


class NoteIn(BaseModel):
    note_id: str
    reason: str = "ok"


def build(settings: ProbeSettings) -> FastAPI:
    runtime = ServiceRuntime(
        settings,
        RuntimeSpec(consumes=[Topic.TICKETS], produces=[Topic.TICKETS], outbox_collections=["notes"]),
    )
    if settings.crash_point == "before_publish":

        async def crash_before_publish(topic: str, event: CloudEvent) -> None:
            os.kill(os.getpid(), signal.SIGKILL)

        runtime.relay._publish = crash_before_publish

    router = APIRouter()

    @router.post("/notes", status_code=201)
    async def create_note(body: NoteIn) -> dict[str, Any]:
        event = new_event(
            TicketCancelled(ticket_id=body.note_id, reason=body.reason, cancelled_at=datetime.now(UTC)),
            source="/aftersales/probe",
            subject=body.note_id,
        )
        await runtime.db["notes"].insert_one(new_with_events({"_id": body.note_id}, Topic.TICKETS, [event]))
        runtime.relay.wake()
        return {"id": body.note_id, "event_id": event.id}

    async def handle(event: CloudEvent) -> None:
        model = event.model()
        assert isinstance(model, TicketCancelled)
        tallies = runtime.db["tallies"]
        await tallies.update_one({"_id": model.ticket_id}, {"$inc": {"deliveries": 1}}, upsert=True)
        if model.reason == "poison":
            raise RuntimeError("this handler always fails for reason=poison")
        await apply_once(tallies, model.ticket_id, event.id, {"$inc": {"applied": 1}}, upsert=True)
        if settings.crash_point == "after_apply" and model.reason == "crash":
            os.kill(os.getpid(), signal.SIGKILL)

    subscribe(runtime.broker, settings, [Topic.TICKETS], handle)
    return create_app(runtime, title="probe", description="foundation probe", routers=[router])


if __name__ == "__main__":
    run_service("probe", ProbeSettings, build)
