"""HTTP routes of routing: grids, technicians, SLA policies, work-order actions, surge, grid planning."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field

from aftersales.routing.domain import (
    OPEN_STATUSES,
    Action,
    GridLoad,
    ServiceGrid,
    Status,
    Technician,
    plan_grids,
    region_parts,
)
from aftersales.routing.lifecycle import Lifecycle
from aftersales.routing.router import Router
from aftersales.routing.sla import SlaPolicy
from aftersales.routing.store import grid_of, technician_of
from aftersales.shared.errors import Forbidden, InvalidRequest, NotFound
from aftersales.shared.http import Principal, require
from aftersales.shared.settings import Scope

Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]
Supervisor = Annotated[Principal, Depends(require(Scope.SUPERVISOR))]
Staff = Annotated[Principal, Depends(require(Scope.TECHNICIAN, Scope.SUPERVISOR))]


class GridRead(ServiceGrid):
    surge_on: bool
    surge_trigger: str | None = None
    queue_length: int | None = None


class TechnicianRead(Technician):
    active_work_orders: int
    last_assigned_at: datetime | None = None


class ClockRead(BaseModel):
    target_minutes: float
    started_at: datetime
    due_at: datetime | None
    stopped_at: datetime | None = None
    breached: bool = False
    warnings_pct: list[int] = Field(default_factory=list)


class WorkOrderRead(BaseModel):
    ticket_id: str
    round: int
    status: Status
    grid_id: str
    technician_id: str | None
    tier: int | None = None
    via: str | None = None
    priority: str
    category: str
    device_type: str
    region_code: str
    escalation_level: str | None = None
    resolution_code: str | None = None
    started_at: datetime
    assigned_at: datetime | None = None
    updated_at: datetime
    paused_since: datetime | None = None
    first_response: ClockRead
    resolution: ClockRead


class ResolveIn(BaseModel):
    resolution_code: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")


class ReasonIn(BaseModel):
    reason: str = Field(default="", max_length=500)


class SurgeIn(BaseModel):
    on: bool


class SurgeRead(BaseModel):
    grid_id: str
    surge_on: bool
    changed: bool


class PlanningRead(BaseModel):
    grid_id: str
    open_work_orders: int
    technicians_on_duty: int
    per_technician: float
    suggested_split: list[list[str]]
    suggestion: str


class PolicyRead(SlaPolicy):
    version: int
    replanned_work_orders: int | None = None


def work_order_read(doc: dict[str, Any]) -> WorkOrderRead:
    facts = doc["facts"]

    def clock(name: str) -> ClockRead:
        s = doc["sla"][name]
        return ClockRead(
            target_minutes=s["target_minutes"],
            started_at=s["started_at"],
            due_at=s.get("due_at"),
            stopped_at=s.get("stopped_at"),
            breached=100 in s.get("fired", []),
            warnings_pct=[p for p in s.get("fired", []) if p < 100],
        )

    return WorkOrderRead(
        ticket_id=doc["_id"],
        round=doc["round"],
        status=doc["status"],
        grid_id=doc["grid_id"],
        technician_id=doc.get("technician_id"),
        tier=doc.get("tier"),
        via=doc.get("via"),
        priority=facts["priority"],
        category=facts["category"],
        device_type=facts["device_type"],
        region_code=facts["region_code"],
        escalation_level=doc.get("escalation_level"),
        resolution_code=doc.get("resolution_code"),
        started_at=doc["started_at"],
        assigned_at=doc.get("assigned_at"),
        updated_at=doc["updated_at"],
        paused_since=doc.get("paused_since"),
        first_response=clock("first_response"),
        resolution=clock("resolution"),
    )


def build_router(router: Router, lifecycle: Lifecycle) -> APIRouter:
    api = APIRouter(prefix="/v1")
    store = router.store

    async def grid_read(doc: dict[str, Any]) -> GridRead:
        return GridRead(
            **grid_of(doc).model_dump(),
            surge_on=bool(doc.get("surge_on")),
            surge_trigger=doc.get("surge_trigger"),
            queue_length=await store.queue_length(doc["_id"]),
        )

    @api.put(
        "/grids/{grid_id}",
        tags=["grids"],
        summary="Create or replace a service grid",
        response_model=GridRead,
    )
    async def put_grid(grid_id: str, body: ServiceGrid, response: Response, _: Admin) -> GridRead:
        if body.id != grid_id:
            raise InvalidRequest(f"body id {body.id!r} differs from the path id {grid_id!r}", field="id")
        known = await store.grid_docs(fresh=True)
        unknown = [n for n in body.neighbours if n not in known and n != grid_id]
        if unknown:
            raise InvalidRequest(f"unknown neighbour grid(s): {', '.join(unknown)}", field="neighbours")
        if grid_id in body.neighbours:
            raise InvalidRequest("a grid cannot be its own neighbour", field="neighbours")
        before = known.get(grid_id)
        doc, created = await store.put_grid(body)
        response.status_code = 201 if created else 200
        if before is not None and grid_of(before).calendar != body.calendar:
            await lifecycle.replan_open({"grid_id": grid_id})
        await router.drain(grid_id, await router.view(fresh=True))
        return await grid_read(doc)

    @api.get("/grids/{grid_id}", tags=["grids"], summary="Read a service grid", response_model=GridRead)
    async def get_grid(grid_id: str, _: Staff) -> GridRead:
        doc = await store.grid_doc(grid_id)
        if doc is None:
            raise NotFound(f"grid {grid_id} not found", field="grid_id")
        return await grid_read(doc)

    @api.get("/grids", tags=["grids"], summary="List service grids", response_model=list[GridRead])
    async def list_grids(_: Staff) -> list[GridRead]:
        return [await grid_read(d) for d in (await store.grid_docs(fresh=True)).values()]

    @api.post(
        "/grids/{grid_id}/surge",
        tags=["grids"],
        summary="Switch surge mode (应急预案) on or off",
        response_model=SurgeRead,
    )
    async def surge(grid_id: str, body: SurgeIn, _: Supervisor) -> SurgeRead:
        if await store.grid_doc(grid_id) is None:
            raise NotFound(f"grid {grid_id} not found", field="grid_id")
        backlog = await store.queue_length(grid_id)
        changed = await router.switch_surge(grid_id, on=body.on, trigger="supervisor", backlog=backlog)
        return SurgeRead(grid_id=grid_id, surge_on=body.on, changed=changed)

    @api.put(
        "/technicians/{tech_id}",
        tags=["technicians"],
        summary="Create or replace a technician",
        response_model=TechnicianRead,
    )
    async def put_technician(tech_id: str, body: Technician, response: Response, _: Admin) -> TechnicianRead:
        if body.id != tech_id:
            raise InvalidRequest(f"body id {body.id!r} differs from the path id {tech_id!r}", field="id")
        grid = await store.grid_doc(body.grid_id)
        if grid is None:
            raise InvalidRequest(f"unknown grid {body.grid_id}", field="grid_id")
        teams = [t["id"] for t in grid["spec"].get("teams", [])]
        if body.team_id is not None and body.team_id not in teams:
            raise InvalidRequest(f"grid {body.grid_id} has no team {body.team_id}", field="team_id")
        doc, created = await store.put_technician(body)
        response.status_code = 201 if created else 200
        await router.capacity_freed(body.grid_id)  # more capacity or back on duty: serve the queue
        return _tech_read(doc)

    @api.get(
        "/technicians/{tech_id}",
        tags=["technicians"],
        summary="Read a technician",
        response_model=TechnicianRead,
    )
    async def get_technician(tech_id: str, principal: Staff) -> TechnicianRead:
        if not principal.has(Scope.SUPERVISOR) and principal.subject != tech_id:
            raise Forbidden("technicians may read only their own record")
        doc = await store.technician_doc(tech_id)
        if doc is None:
            raise NotFound(f"technician {tech_id} not found", field="technician_id")
        return _tech_read(doc)

    @api.get(
        "/technicians",
        tags=["technicians"],
        summary="List technicians, optionally of one grid",
        response_model=list[TechnicianRead],
    )
    async def list_technicians(_: Supervisor, grid_id: str | None = None) -> list[TechnicianRead]:
        if grid_id is not None and await store.grid_doc(grid_id) is None:
            raise NotFound(f"grid {grid_id} not found", field="grid_id")
        return [_tech_read(d) for d in await store.technician_docs(grid_id)]

    @api.get("/sla-policies", tags=["sla"], summary="Read the SLA policy table", response_model=PolicyRead)
    async def get_policy(_: Staff) -> PolicyRead:
        policy, version = await store.policy()
        return PolicyRead(**policy.model_dump(), version=version)

    @api.put(
        "/sla-policies",
        tags=["sla"],
        summary="Replace the SLA policy table; open clocks are re-planned",
        response_model=PolicyRead,
    )
    async def put_policy(body: SlaPolicy, _: Admin) -> PolicyRead:
        version = await store.put_policy(body)
        replanned = await lifecycle.replan_open({}, body)
        return PolicyRead(**body.model_dump(), version=version, replanned_work_orders=replanned)

    @api.get(
        "/work-orders", tags=["work orders"], summary="List work orders", response_model=list[WorkOrderRead]
    )
    async def list_work_orders(
        principal: Staff,
        technician_id: str | None = None,
        status: Status | None = None,
        grid_id: str | None = None,
        open_only: bool = False,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[WorkOrderRead]:
        if not principal.has(Scope.SUPERVISOR):
            if technician_id not in (None, principal.subject):
                raise Forbidden("technicians may list only their own work orders")
            technician_id = principal.subject
        query: dict[str, Any] = {}
        if technician_id:
            query["technician_id"] = technician_id
        if grid_id:
            query["grid_id"] = grid_id
        if status:
            query["status"] = status.value
        elif open_only:
            query["status"] = {"$in": [s.value for s in OPEN_STATUSES]}
        return [work_order_read(d) for d in await store.find_work_orders(query, limit)]

    @api.get(
        "/work-orders/{ticket_id}",
        tags=["work orders"],
        summary="Read a work order",
        response_model=WorkOrderRead,
    )
    async def get_work_order(ticket_id: str, principal: Staff) -> WorkOrderRead:
        doc = await store.work_order(ticket_id)
        if doc is None:
            raise NotFound(f"work order {ticket_id} not found", field="ticket_id")
        if not principal.has(Scope.SUPERVISOR) and doc.get("technician_id") != principal.subject:
            raise Forbidden(f"work order {ticket_id} is not assigned to {principal.subject}")
        return work_order_read(doc)

    def action_route(action: Action) -> None:
        async def simple(ticket_id: str, principal: Staff, body: ReasonIn | None = None) -> WorkOrderRead:
            reason = body.reason if body else ""
            return work_order_read(await lifecycle.act(ticket_id, action, principal, reason=reason))

        api.post(
            f"/work-orders/{{ticket_id}}/{action.value}",
            tags=["work orders"],
            response_model=WorkOrderRead,
            summary=f"{action.value.replace('-', ' ').capitalize()} a work order (409 if not allowed now)",
            name=f"work_order_{action.value.replace('-', '_')}",
        )(simple)

    for action in (Action.ACCEPT, Action.START, Action.PENDING_CUSTOMER, Action.ESCALATE, Action.HAND_BACK):
        action_route(action)

    @api.post(
        "/work-orders/{ticket_id}/resolve",
        tags=["work orders"],
        response_model=WorkOrderRead,
        summary="Resolve a work order with a resolution code (409 before accept)",
    )
    async def resolve(ticket_id: str, body: ResolveIn, principal: Staff) -> WorkOrderRead:
        doc = await lifecycle.act(ticket_id, Action.RESOLVE, principal, code=body.resolution_code)
        return work_order_read(doc)

    @api.get(
        "/reports/grid-planning",
        tags=["reports"],
        response_model=list[PlanningRead],
        summary="Grids whose open work orders per on-duty technician exceed a threshold, with a split",
    )
    async def grid_planning(
        _: Supervisor, threshold: Annotated[float, Query(gt=0, le=10_000)] = 5.0
    ) -> list[PlanningRead]:
        view = await router.view(fresh=True)
        counts = await store.open_by_grid_and_region()
        on_duty: dict[str, int] = {}
        for doc in await store.technician_docs():
            if doc.get("on_duty", True):
                on_duty[doc["grid_id"]] = on_duty.get(doc["grid_id"], 0) + 1
        loads = []
        for gid, grid in view.grids.items():
            depth = len(grid.region_path)
            children: dict[str, int] = {}
            total = 0
            for (g, region), n in counts.items():
                if g != gid:
                    continue
                total += n
                parts = region_parts(region)
                child = parts[depth] if len(parts) > depth else "(grid level)"
                children[child] = children.get(child, 0) + n
            loads.append(GridLoad(gid, grid.region_path, total, on_duty.get(gid, 0), children))
        return [_planning(f) for f in plan_grids(loads, threshold)]

    return api


def _planning(f: Any) -> PlanningRead:
    return PlanningRead(
        grid_id=f.grid_id,
        open_work_orders=f.open_work_orders,
        technicians_on_duty=f.technicians_on_duty,
        per_technician=f.per_technician,
        suggested_split=f.suggested_split,
        suggestion=f.suggestion,
    )


def _tech_read(doc: dict[str, Any]) -> TechnicianRead:
    tech = technician_of(doc)
    return TechnicianRead(
        **tech.model_dump(),
        active_work_orders=int(doc.get("active_work_orders", 0)),
        last_assigned_at=doc.get("last_assigned_at"),
    )
