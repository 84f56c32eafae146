"""The callers an endpoint accepts, one name per scope set for every service (FastAPI `Annotated`
dependencies), and `service_of`, which hands a route its service object. A route names who may call
it in its signature: `async def get(p: Staff) -> ...`.

Object-level authorization (which tickets, work orders or complaints a caller may see) stays in each
service: these aliases only say which roles may reach the route at all."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request

from aftersales.shared.auth import Principal, require
from aftersales.shared.settings import Scope

T = TypeVar("T")

Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]
"""Platform administration: grids, technicians, SLA policies."""

Supervisor = Annotated[Principal, Depends(require(Scope.SUPERVISOR))]
"""The service desk's supervisors (and admins)."""

Staff = Annotated[Principal, Depends(require(Scope.TECHNICIAN, Scope.SUPERVISOR))]
"""Technicians and supervisors: the people who do and oversee the work."""

ChannelOrSupervisor = Annotated[Principal, Depends(require(Scope.CHANNEL, Scope.SUPERVISOR))]
"""Who opens things on a customer's behalf: an intake channel, or a supervisor at the desk."""

AnyCaller = Annotated[Principal, Depends(require(Scope.CHANNEL, Scope.TECHNICIAN, Scope.SUPERVISOR))]
"""Every authenticated role; what each one sees is narrowed per object."""


def service_of(name: str, kind: type[T]) -> Any:
    """A dependency handing a route the service object `build` put on `app.state.<name>`:
    `Service = Annotated[FollowUps, service_of("followups", FollowUps)]`."""

    def get(request: Request) -> T:
        value = getattr(request.app.state, name)
        if not isinstance(value, kind):
            raise TypeError(f"app.state.{name} is {type(value).__name__}, not {kind.__name__}")
        return value

    get.__name__ = f"{name}_service"
    return Depends(get)
