"""The callers an endpoint accepts, one name per scope set for every service (FastAPI `Annotated`
dependencies). A route names who may call it in its signature: `async def get(p: Staff) -> ...`.

Object-level authorization (which tickets, work orders or complaints a caller may see) stays in each
service: these aliases only say which roles may reach the route at all."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from aftersales.shared.auth import Principal, require
from aftersales.shared.settings import Scope

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
