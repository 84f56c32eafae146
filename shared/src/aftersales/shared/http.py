"""HTTP app factory: every service gets /healthz, /readyz, /metrics, /asyncapi.json, OpenAPI at /docs,
bearer-token auth with scopes, field-naming 4xx errors, a body size limit, and RED metrics per route."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from faststream.specification import AsyncAPI
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as AsgiScope

from aftersales.shared.errors import DomainError, Forbidden
from aftersales.shared.runtime import ServiceRuntime
from aftersales.shared.settings import Scope, TokenGrant

MAX_BODY_BYTES = 256 * 1024

HTTP_REQUESTS = Counter(
    "aftersales_http_requests_total",
    "HTTP requests by route template and status",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "aftersales_http_request_duration_seconds",
    "HTTP request duration by route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller."""

    subject: str
    scopes: frozenset[Scope]
    channel: str | None = None

    def has(self, scope: Scope) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes

    @property
    def is_channel_only(self) -> bool:
        """True when the caller may see only what its channel created."""
        return not (self.scopes & {Scope.ADMIN, Scope.SUPERVISOR, Scope.TECHNICIAN})


_bearer = HTTPBearer(auto_error=False, description="Bearer token from API_TOKENS")


def require(*scopes: Scope) -> Callable[..., Awaitable[Principal]]:
    """Return a dependency that authenticates the caller and demands one of `scopes` (admin passes all)."""

    async def dependency(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Principal:
        grants: dict[str, TokenGrant] = request.app.state.token_grants
        if credentials is None:
            raise _Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
        grant = grants.get(credentials.credentials)
        if grant is None:
            raise _Unauthorized("unknown bearer token")
        principal = Principal(grant.subject, frozenset(grant.scopes), grant.channel)
        if scopes and not any(principal.has(s) for s in scopes):
            raise Forbidden(f"this needs one of the scopes: {', '.join(s.value for s in scopes)}")
        return principal

    return dependency


class _Unauthorized(DomainError):
    status = 401
    code = "unauthorized"


class BodySizeLimit:
    """Refuse request bodies over `limit` bytes with 413, before the app reads them."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(self.limit)(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await _too_large(self.limit)(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(
        {"error": "payload_too_large", "message": f"request body is larger than {limit // 1024} KB"},
        status_code=413,
    )


def create_app(
    runtime: ServiceRuntime,
    *,
    title: str,
    description: str,
    routers: Sequence[APIRouter] = (),
    version: str = "0.1.0",
) -> FastAPI:
    """Return the service's FastAPI app; its lifespan starts and stops the runtime."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title=title, description=description, version=version, lifespan=lifespan)
    app.state.runtime = runtime
    app.state.token_grants = runtime.settings.token_grants()
    app.add_middleware(BodySizeLimit)

    @app.middleware("http")
    async def red_metrics(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        HTTP_REQUESTS.labels(request.method, template, str(response.status_code)).inc()
        HTTP_DURATION.labels(request.method, template).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _field_name(err["loc"]), "message": err["msg"]} for err in exc.errors()]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return JSONResponse(
            {"error": "invalid_request", "message": summary, "errors": errors}, status_code=422
        )

    @app.exception_handler(DomainError)
    async def domain_error(_: Request, exc: DomainError) -> JSONResponse:
        body: dict[str, Any] = {"error": exc.code, "message": exc.message}
        if exc.field:
            body["field"] = exc.field
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(body, status_code=exc.status, headers=headers)

    @app.get("/healthz", tags=["operations"], summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": runtime.settings.service_name}

    @app.get(
        "/readyz", tags=["operations"], summary="Readiness: Kafka and MongoDB reachable, consumers running"
    )
    async def readyz() -> JSONResponse:
        checks = await runtime.readiness()
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/asyncapi.json", tags=["operations"], summary="AsyncAPI document of this service's topics")
    async def asyncapi() -> JSONResponse:
        spec = AsyncAPI(runtime.broker, title=f"{title} events", version=version).to_specification()
        return JSONResponse(spec.to_jsonable())

    for router in routers:
        app.include_router(router)
    return app


def _field_name(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"
