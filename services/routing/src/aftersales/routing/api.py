"""HTTP routes of routing: grids, technicians, SLA policies, work-order actions, surge, grid planning.
Edges only: parse, authorize, call the service, shape the response."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from aftersales.routing.desk import HandOrder
from aftersales.routing.domain import Action, ServiceGrid, Status, Technician
from aftersales.routing.schemas import (
    GridRead,
    HandDispatchIn,
    PlanningRead,
    PolicyRead,
    PoolReasonIn,
    ReasonIn,
    ResolveIn,
    StatusIn,
    SurgeIn,
    SurgeRead,
    TechnicianRead,
    WorkOrderRead,
    grid_read,
    planning_read,
    technician_read,
    work_order_read,
)
from aftersales.routing.service import RoutingService
from aftersales.routing.sla import SlaPolicy
from aftersales.shared.errors import Forbidden, InvalidRequest, NotFound
from aftersales.shared.roles import Admin, Staff, Supervisor, service_of
from aftersales.shared.settings import Scope

Routing = Annotated[RoutingService, service_of("routing", RoutingService)]

grids = APIRouter(prefix="/v1", tags=["grids"])
technicians = APIRouter(prefix="/v1", tags=["technicians"])
sla = APIRouter(prefix="/v1", tags=["sla"])
work_orders = APIRouter(prefix="/v1", tags=["work orders"])
pool = APIRouter(prefix="/v1", tags=["pool"])
reports = APIRouter(prefix="/v1", tags=["reports"])
ROUTERS = (grids, technicians, sla, work_orders, pool, reports)


def _same_id(body_id: str, path_id: str) -> None:
    if body_id != path_id:
        raise InvalidRequest(f"body id {body_id!r} differs from the path id {path_id!r}", field="id")


# ------------------------------------------------------------------------------- grids


@grids.put("/grids/{grid_id}", summary="Create or replace a service grid", response_model=GridRead)
async def put_grid(
    grid_id: str, body: ServiceGrid, response: Response, _: Admin, routing: Routing
) -> GridRead:
    _same_id(body.id, grid_id)
    doc, created = await routing.put_grid(body)
    response.status_code = 201 if created else 200
    return grid_read(doc, await routing.store.queue_length(grid_id))


@grids.get("/grids/{grid_id}", summary="Read a service grid", response_model=GridRead)
async def get_grid(grid_id: str, _: Staff, routing: Routing) -> GridRead:
    doc = await routing.store.grid_doc(grid_id)
    if doc is None:
        raise NotFound(f"grid {grid_id} not found", field="grid_id")
    return grid_read(doc, await routing.store.queue_length(grid_id))


@grids.get("/grids", summary="List service grids", response_model=list[GridRead])
async def list_grids(_: Staff, routing: Routing) -> list[GridRead]:
    docs = (await routing.store.grid_docs(fresh=True)).values()
    return [grid_read(d, await routing.store.queue_length(d["_id"])) for d in docs]


@grids.post(
    "/grids/{grid_id}/surge", summary="Switch surge mode (应急预案) on or off", response_model=SurgeRead
)
async def surge(grid_id: str, body: SurgeIn, _: Supervisor, routing: Routing) -> SurgeRead:
    changed = await routing.switch_surge(grid_id, on=body.on)
    return SurgeRead(grid_id=grid_id, surge_on=body.on, changed=changed)


# ------------------------------------------------------------------------------- technicians


@technicians.put(
    "/technicians/{tech_id}", summary="Create or replace a technician", response_model=TechnicianRead
)
async def put_technician(
    tech_id: str, body: Technician, response: Response, _: Admin, routing: Routing
) -> TechnicianRead:
    _same_id(body.id, tech_id)
    doc, created = await routing.put_technician(body)
    response.status_code = 201 if created else 200
    return technician_read(doc)


@technicians.put(
    "/technicians/me/status",
    summary="Set my own status (available, busy, break, off); only available takes new work",
    response_model=TechnicianRead,
)
async def put_my_status(body: StatusIn, principal: Staff, routing: Routing) -> TechnicianRead:
    return technician_read(await routing.availability.set_status(principal.subject, body.status))


@technicians.post(
    "/technicians/me/heartbeat",
    summary="My mobile client is alive (after a first heartbeat, silence past the limit stops new work)",
    response_model=TechnicianRead,
)
async def heartbeat(principal: Staff, routing: Routing) -> TechnicianRead:
    return technician_read(await routing.availability.heartbeat(principal.subject))


@technicians.get("/technicians/{tech_id}", summary="Read a technician", response_model=TechnicianRead)
async def get_technician(tech_id: str, principal: Staff, routing: Routing) -> TechnicianRead:
    if not principal.has(Scope.SUPERVISOR) and principal.subject != tech_id:
        raise Forbidden("technicians may read only their own record")
    doc = await routing.store.technician_doc(tech_id)
    if doc is None:
        raise NotFound(f"technician {tech_id} not found", field="technician_id")
    return technician_read(doc)


@technicians.get(
    "/technicians",
    summary="List technicians, optionally of one grid",
    response_model=list[TechnicianRead],
)
async def list_technicians(
    _: Supervisor, routing: Routing, grid_id: str | None = None
) -> list[TechnicianRead]:
    if grid_id is not None and await routing.store.grid_doc(grid_id) is None:
        raise NotFound(f"grid {grid_id} not found", field="grid_id")
    return [technician_read(d) for d in await routing.store.technician_docs(grid_id)]


# ------------------------------------------------------------------------------- SLA policy


@sla.get("/sla-policies", summary="Read the SLA policy table", response_model=PolicyRead)
async def get_policy(_: Staff, routing: Routing) -> PolicyRead:
    policy, version = await routing.store.policy()
    return PolicyRead(**policy.model_dump(), version=version)


@sla.put(
    "/sla-policies",
    summary="Replace the SLA policy table; open clocks are re-planned",
    response_model=PolicyRead,
)
async def put_policy(body: SlaPolicy, _: Admin, routing: Routing) -> PolicyRead:
    version, replanned = await routing.put_policy(body)
    return PolicyRead(**body.model_dump(), version=version, replanned_work_orders=replanned)


# ------------------------------------------------------------------------------- work orders


@work_orders.get("/work-orders", summary="List work orders", response_model=list[WorkOrderRead])
async def list_work_orders(
    principal: Staff,
    routing: Routing,
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
    docs = await routing.store.find_work_orders(
        technician_id=technician_id,
        grid_id=grid_id,
        status=status.value if status else None,
        open_only=open_only,
        limit=limit,
    )
    return [work_order_read(d) for d in docs]


@work_orders.get("/work-orders/{ticket_id}", summary="Read a work order", response_model=WorkOrderRead)
async def get_work_order(ticket_id: str, principal: Staff, routing: Routing) -> WorkOrderRead:
    doc = await routing.store.work_order(ticket_id)
    if doc is None:
        raise NotFound(f"work order {ticket_id} not found", field="ticket_id")
    if not principal.has(Scope.SUPERVISOR) and doc.get("technician_id") != principal.subject:
        raise Forbidden(f"work order {ticket_id} is not assigned to {principal.subject}")
    return work_order_read(doc)


def _action_route(action: Action) -> None:
    """Register the POST of one action that takes an optional reason."""

    async def simple(
        ticket_id: str, principal: Staff, routing: Routing, body: ReasonIn | None = None
    ) -> WorkOrderRead:
        reason = body.reason if body else ""
        return work_order_read(await routing.work_orders.act(ticket_id, action, principal, reason=reason))

    work_orders.post(
        f"/work-orders/{{ticket_id}}/{action.value}",
        response_model=WorkOrderRead,
        summary=f"{action.value.replace('-', ' ').capitalize()} a work order (409 if not allowed now)",
        name=f"work_order_{action.value.replace('-', '_')}",
    )(simple)


for _action in (Action.ACCEPT, Action.START, Action.PENDING_CUSTOMER, Action.ESCALATE, Action.HAND_BACK):
    _action_route(_action)


@work_orders.post(
    "/work-orders/{ticket_id}/reassign",
    response_model=WorkOrderRead,
    summary="Dispatch by hand (派单/改派/转派): to a technician or another grid, with a reason "
    "(422 naming the field when a check fails without override_reason; 409 if it changed meanwhile)",
)
async def reassign(
    ticket_id: str, body: HandDispatchIn, principal: Supervisor, routing: Routing
) -> WorkOrderRead:
    order = HandOrder(
        supervisor_id=principal.subject,
        reason=body.reason,
        technician_id=body.technician_id,
        grid_id=body.grid_id,
        override_reason=body.override_reason,
        expected_status=body.expected_status,
    )
    return work_order_read(await routing.desk.dispatch_by_hand(ticket_id, order))


@work_orders.post(
    "/work-orders/{ticket_id}/resolve",
    response_model=WorkOrderRead,
    summary="Resolve a work order with a resolution code (409 before accept)",
)
async def resolve(ticket_id: str, body: ResolveIn, principal: Staff, routing: Routing) -> WorkOrderRead:
    doc = await routing.work_orders.act(ticket_id, Action.RESOLVE, principal, code=body.resolution_code)
    return work_order_read(doc)


# ------------------------------------------------------------------------------- the pool (抢单)


@pool.get(
    "/pool",
    summary="The offered work orders I may claim now (my grid's pool; priority first, then age)",
    response_model=list[WorkOrderRead],
)
async def list_pool(
    principal: Staff, routing: Routing, limit: Annotated[int, Query(ge=1, le=100)] = 50
) -> list[WorkOrderRead]:
    return [work_order_read(d) for d in await routing.claims.offers_for(principal.subject, limit=limit)]


@pool.post(
    "/work-orders/{ticket_id}/claim",
    summary="Claim an offered work order (the first claim wins; 409 if another won or I may not now)",
    response_model=WorkOrderRead,
)
async def claim(ticket_id: str, principal: Staff, routing: Routing) -> WorkOrderRead:
    return work_order_read(await routing.claims.claim(ticket_id, principal.subject))


@pool.post(
    "/work-orders/{ticket_id}/decline",
    summary="Decline an offered work order: it is no longer offered to me",
    response_model=WorkOrderRead,
)
async def decline(ticket_id: str, body: PoolReasonIn, principal: Staff, routing: Routing) -> WorkOrderRead:
    return work_order_read(await routing.claims.decline(ticket_id, principal.subject, body.reason))


@pool.post(
    "/work-orders/{ticket_id}/return",
    summary="Return a work order I claimed to the pool (my slot is released; it is offered to others)",
    response_model=WorkOrderRead,
)
async def return_to_pool(
    ticket_id: str, body: PoolReasonIn, principal: Staff, routing: Routing
) -> WorkOrderRead:
    return work_order_read(await routing.claims.give_back(ticket_id, principal.subject, body.reason))


# ------------------------------------------------------------------------------- reports


@reports.get(
    "/reports/grid-planning",
    response_model=list[PlanningRead],
    summary="Grids whose open work orders per on-duty technician exceed a threshold, with a split",
)
async def grid_planning(
    _: Supervisor, routing: Routing, threshold: Annotated[float, Query(gt=0, le=10_000)] = 5.0
) -> list[PlanningRead]:
    return [planning_read(f) for f in await routing.grid_planning(threshold)]
