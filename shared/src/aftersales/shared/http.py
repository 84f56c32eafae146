"""HTTP app factory: every service gets /healthz, /readyz, /metrics, /asyncapi.json, OpenAPI at /docs
(each exposed as settings say), bearer-token auth with scopes and per-token rate limits (`auth`),
field-naming 4xx errors, a body size limit (larger for the upload routes that declare their own), and
RED metrics per route."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from faststream.specification import AsyncAPI
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from pymongo.errors import PyMongoError
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as AsgiScope

from aftersales.shared.auth import (
    Principal,
    RateLimiter,
    TokenRegistry,
    TooManyRequests,
    Unauthorized,
    _bearer,
    anonymous,
    authenticate,
    require,
)
from aftersales.shared.errors import DomainError, Forbidden, NotFound, RetryLater, is_unavailable
from aftersales.shared.failures import note_failure
from aftersales.shared.runtime import ServiceRuntime
from aftersales.shared.settings import Scope

__all__ = [
    "MAX_BODY_BYTES",
    "BodySizeLimit",
    "Principal",
    "RouteBodyLimit",
    "allow_larger_body",
    "anonymous",
    "create_app",
    "require",
]

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

# The body of every 4xx this API answers (documented for 422 in place of FastAPI's default shape).
ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "machine-readable code, e.g. invalid_request"},
        "message": {"type": "string", "description": "what was wrong, naming the field"},
        "field": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}


@dataclass(frozen=True, slots=True)
class RouteBodyLimit:
    """A route that takes larger bodies than `MAX_BODY_BYTES` (an upload it streams itself): its method,
    its path template, its own limit and the field a 413 names."""

    method: str
    path: str
    limit: int
    field: str = "body"
    pattern: re.Pattern[str] = dataclass_field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", compile_path(self.path)[0])

    def matches(self, scope: AsgiScope) -> bool:
        return bool(scope["method"] == self.method and self.pattern.match(scope["path"]))


def allow_larger_body(app: FastAPI, *limits: RouteBodyLimit) -> None:
    """Let these routes take bodies up to their own limit (every other route keeps `MAX_BODY_BYTES`)."""
    app.state.body_limits = (*getattr(app.state, "body_limits", ()), *limits)


class BodySizeLimit:
    """Refuse request bodies over the limit with 413, before the app reads them: `limit` bytes, or the
    route's own limit where it declared one (`allow_larger_body`), counted as the body streams in."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    def _limit_of(self, scope: AsgiScope) -> tuple[int, str | None]:
        app = scope.get("app")
        for route in getattr(getattr(app, "state", None), "body_limits", ()):
            if route.matches(scope):
                return route.limit, route.field
        return self.limit, None

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, field = self._limit_of(scope)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(limit, field)(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await _too_large(limit, field)(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def _too_large(limit: int, field: str | None) -> JSONResponse:
    body = {"error": "payload_too_large", "message": f"request body is larger than {limit // 1024} KB"}
    if field is not None:
        body.update(message=f"{field}: larger than {limit} bytes", field=field)
    return JSONResponse(body, status_code=413)


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

    settings = runtime.settings
    app = FastAPI(
        title=title,
        description=description,
        version=version,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.runtime = runtime
    app.state.tokens = TokenRegistry.of(settings)
    app.state.rate_limiter = RateLimiter.of(settings)
    app.add_middleware(BodySizeLimit)

    @app.middleware("http")
    async def red_metrics(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except BaseException:
            note_failure()  # a request stopped part-way: reconcilers look at everything (see `failures`)
            raise
        if response.status_code >= 500:
            note_failure()
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
        headers = None
        if isinstance(exc, Unauthorized):
            headers = {"WWW-Authenticate": "Bearer"}
        elif isinstance(exc, TooManyRequests):
            headers = {"Retry-After": str(exc.retry_after_s)}
        return JSONResponse(body, status_code=exc.status, headers=headers)

    @app.exception_handler(RetryLater)
    async def retry_later(_: Request, exc: RetryLater) -> JSONResponse:
        # A lost race that kept losing, or a transient fault: nothing was changed; the same request
        # may simply be sent again.
        return JSONResponse(
            {"error": "busy", "message": str(exc) or "busy; try again"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(PyMongoError)
    async def database_unavailable(_: Request, exc: Exception) -> JSONResponse:
        # The database did not answer (frozen, restarting, a connection broke) or answered "not now" (a
        # time limit, a stepped-down primary, a write conflict): a write may or may not have landed, so
        # the caller is told to send the same request again, which is safe with its Idempotency-Key (a
        # creation's replay also publishes what the first attempt left pending).
        if not is_unavailable(exc):
            raise exc  # anything else is a fault of ours: the server's 500, logged with its traceback
        return JSONResponse(
            {
                "error": "database_unavailable",
                "message": "the database did not answer; send the same request again (with the same "
                "Idempotency-Key, where the route takes one)",
            },
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.get("/healthz", tags=["operations"], summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": settings.service_name}

    @app.get(
        "/readyz", tags=["operations"], summary="Readiness: Kafka and MongoDB reachable, consumers running"
    )
    async def readyz() -> JSONResponse:
        checks = await runtime.readiness()
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    metrics_gate = _gate(settings.metrics_exposure(), Scope.METRICS)

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        include_in_schema=False,
        dependencies=[Depends(metrics_gate)],
    )
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    docs = settings.docs_exposure()
    docs_gate = _gate(docs, None)

    @app.get(
        "/asyncapi.json",
        tags=["operations"],
        summary="AsyncAPI document of this service's topics",
        dependencies=[Depends(docs_gate)],
    )
    async def asyncapi() -> JSONResponse:
        spec = AsyncAPI(runtime.broker, title=f"{title} events", version=version).to_specification()
        return JSONResponse(spec.to_jsonable())

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(docs_gate)])
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    if docs == "public":  # the HTML pages fetch /openapi.json without a token: only when it is public

        @app.get("/docs", include_in_schema=False)
        async def swagger() -> HTMLResponse:
            return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{title} - docs")

        @app.get("/redoc", include_in_schema=False)
        async def redoc() -> HTMLResponse:
            return get_redoc_html(openapi_url="/openapi.json", title=f"{title} - ReDoc")

    def custom_openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=title, version=version, description=description, routes=app.routes)
            app.openapi_schema = _with_error_schema(schema)
        return app.openapi_schema

    app.openapi = custom_openapi  # type: ignore[method-assign]

    for router in routers:
        app.include_router(router)
    return app


def _gate(exposure: str, scope: Scope | None) -> Callable[..., Awaitable[None]]:
    """Return a dependency enforcing an operations endpoint's exposure: public, authenticated or off."""

    async def gate(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> None:
        if exposure == "off":
            raise NotFound("not found")
        if exposure == "authenticated":
            principal = await authenticate(request, credentials)
            if scope is not None and not principal.has(scope):
                raise Forbidden(f"this needs the {scope.value} or admin scope")

    return gate


def _with_error_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Document the error body this API really answers 422 with (not FastAPI's default shape)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("ValidationError", None)
    components["HTTPValidationError"] = ERROR_SCHEMA
    return schema


def _field_name(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"
