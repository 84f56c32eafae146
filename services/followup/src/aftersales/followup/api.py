"""HTTP routes of the follow-up desk: the due list, one visit, record an outcome, reschedule."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime, BaseModel, Field

from aftersales.followup.domain import VisitStatus
from aftersales.followup.service import FollowUps
from aftersales.shared.auth import Principal
from aftersales.shared.contracts.events import VisitKind, VisitOutcome
from aftersales.shared.errors import Forbidden, NotFound
from aftersales.shared.pii import redact_optional
from aftersales.shared.roles import Staff, service_of

Service = Annotated[FollowUps, service_of("followups", FollowUps)]
VisitId = Annotated[str, Path(max_length=200)]


class VisitHistoryRead(BaseModel):
    at: datetime
    action: str
    by: str | None = None
    on_behalf_of: str | None = None
    note: str | None = None


class VisitRead(BaseModel):
    id: str
    ticket_id: str
    round: int
    kind: VisitKind
    status: VisitStatus
    due_at: datetime
    deadline_at: datetime
    timezone: str
    attempt: int
    max_attempts: int
    grid_id: str | None = None
    technician_id: str | None = None
    agent_id: str | None = None
    outcome: VisitOutcome | None = None
    history: list[VisitHistoryRead] = []
    created_at: datetime
    updated_at: datetime


class VisitList(BaseModel):
    items: list[VisitRead]
    count: int


class OutcomeCreate(BaseModel):
    outcome: VisitOutcome
    note: str | None = Field(default=None, max_length=2000)
    agent: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="supervisors only: the agent the outcome is recorded for (the caller is recorded too)",
    )


class RescheduleCreate(BaseModel):
    due_at: AwareDatetime = Field(
        description="new due time; moved out of the customer's do-not-disturb hours"
    )
    agent: str | None = Field(
        default=None, min_length=1, max_length=100, description="supervisors only: assign to this agent"
    )
    note: str | None = Field(default=None, max_length=2000)


router = APIRouter(prefix="/v1/visits", tags=["visits"])


def _read(doc: dict[str, Any], followups: FollowUps) -> VisitRead:
    history = [{**h, "note": redact_optional(h.get("note"))} for h in doc.get("history", [])]
    return VisitRead.model_validate(
        {**doc, "history": history, "id": doc["_id"], "max_attempts": followups.policy.max_attempts}
    )


async def _visit_for(
    followups: FollowUps, principal: Principal, visit_id: str, *, acting: bool
) -> dict[str, Any]:
    """Return the visit if the caller may see it (acting: act on it): staff any visit; a technician
    the visits assigned to it, and to read also the visits of tickets it resolved."""
    doc = await followups.visit(visit_id)
    if principal.is_technician_only:
        mine = doc.get("agent_id") == principal.subject
        if not mine and (acting or doc.get("technician_id") != principal.subject):
            raise NotFound(f"visit {visit_id} not found")
    return doc


def _check_agent(principal: Principal, agent: str | None) -> None:
    if agent is not None and agent != principal.subject and not principal.is_staff:
        raise Forbidden("only supervisors may act for or assign another agent", field="agent")


@router.get("", summary="List visits: the due list of a grid or agent, or a ticket's visits")
async def list_visits(
    principal: Staff,
    followups: Service,
    status: VisitStatus | None = None,
    grid: Annotated[str | None, Query(max_length=100)] = None,
    agent: Annotated[str | None, Query(max_length=100)] = None,
    ticket_id: Annotated[str | None, Query(max_length=100)] = None,
    kind: VisitKind | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> VisitList:
    _check_agent(principal, agent)
    if principal.is_technician_only:
        agent = principal.subject  # a technician's list is its own
    equal_to = {
        "status": status.value if status is not None else None,
        "grid_id": grid,
        "agent_id": agent,
        "ticket_id": ticket_id,
        "kind": kind.value if kind is not None else None,
    }
    items = [_read(d, followups) for d in await followups.visits(equal_to, limit)]
    return VisitList(items=items, count=len(items))


@router.get("/{visit_id}", summary="One visit with its history")
async def get_visit(visit_id: VisitId, principal: Staff, followups: Service) -> VisitRead:
    return _read(await _visit_for(followups, principal, visit_id, acting=False), followups)


@router.post("/{visit_id}/outcome", summary="Record the outcome of a contact attempt (409 when closed)")
async def record_outcome(
    visit_id: VisitId, body: OutcomeCreate, caller: Staff, followups: Service
) -> VisitRead:
    _check_agent(caller, body.agent)
    await _visit_for(followups, caller, visit_id, acting=True)
    on_behalf = body.agent if body.agent not in (None, caller.subject) else None
    await followups.record_outcome(
        visit_id, body.outcome, agent=caller.subject, note=body.note, on_behalf_of=on_behalf
    )
    return _read(await followups.visit(visit_id), followups)


@router.post(
    "/{visit_id}/reschedule",
    summary="Move a visit (out of do-not-disturb hours; 409 when closed or moved too often)",
)
async def reschedule(
    visit_id: VisitId, body: RescheduleCreate, caller: Staff, followups: Service
) -> VisitRead:
    _check_agent(caller, body.agent)
    await _visit_for(followups, caller, visit_id, acting=True)
    await followups.reschedule(visit_id, body.due_at, by=caller.subject, agent_id=body.agent, note=body.note)
    return _read(await followups.visit(visit_id), followups)
