"""Who is calling and how often: bearer tokens kept as SHA-256 digests and compared in constant time,
scopes, a rate limit per token (per client address where no token is needed), and the refusal of query
parameters an endpoint does not take.

Rate limiting uses the `limits` library (moving window, in memory per replica by default, or a shared
storage such as Redis through RATE_LIMIT_STORAGE_URI)."""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits import RateLimitItem, parse_many
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from aftersales.shared.errors import DomainError, Forbidden, InvalidRequest
from aftersales.shared.settings import Scope, ServiceSettings, TokenGrant, hash_token


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

    @property
    def is_staff(self) -> bool:
        """True for supervisors and admins: they may act on every object and confirm channels' hints."""
        return self.has(Scope.SUPERVISOR)

    @property
    def is_technician_only(self) -> bool:
        """True for a technician without a supervisor's or admin's scope: it sees only its own work."""
        return Scope.TECHNICIAN in self.scopes and not self.is_staff


class Unauthorized(DomainError):
    status = 401
    code = "unauthorized"


class TooManyRequests(DomainError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TokenRegistry:
    """The configured tokens as digests; a lookup hashes the presented token and compares it with every
    stored digest in constant time (no early exit, no dict probe on the secret)."""

    def __init__(self, digests: Iterable[tuple[bytes, TokenGrant]]) -> None:
        self._entries = list(digests)

    @classmethod
    def of(cls, settings: ServiceSettings) -> TokenRegistry:
        return cls(settings.token_digests())

    def lookup(self, token: str) -> tuple[str, TokenGrant] | None:
        """Return (an id of the token that is not the token, its grant), or None for an unknown token."""
        presented = hash_token(token)
        found: tuple[str, TokenGrant] | None = None
        for digest, grant in self._entries:
            if hmac.compare_digest(presented, digest) and found is None:
                found = (digest.hex()[:16], grant)
        return found


class RateLimiter:
    """Per-identity request limits (a token id, or `addr:<client>` for unauthenticated routes)."""

    def __init__(self, spec: str, storage_uri: str) -> None:
        self.items: list[RateLimitItem] = parse_many(spec) if spec.strip() else []
        self._limiter = MovingWindowRateLimiter(storage_from_string(storage_uri)) if self.items else None

    @classmethod
    def of(cls, settings: ServiceSettings) -> RateLimiter:
        return cls(settings.rate_limit, settings.rate_limit_storage_uri)

    async def hit(self, identity: str) -> None:
        """Count one request of `identity`; raise TooManyRequests (429) once a limit is used up."""
        if self._limiter is None:
            return
        for item in self.items:
            if not await self._limiter.hit(item, identity):
                stats = await self._limiter.get_window_stats(item, identity)
                retry = max(1, math.ceil(stats.reset_time - time.time()))
                raise TooManyRequests(f"rate limit of {item} exceeded; retry in {retry} s", retry)


_bearer = HTTPBearer(auto_error=False, description="Bearer token from API_TOKENS")


def _client(request: Request) -> str:
    return f"addr:{request.client.host if request.client else 'unknown'}"


async def authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    """Return the caller behind the bearer token (rate limited per token); 401 without a known one."""
    tokens: TokenRegistry = request.app.state.tokens
    limiter: RateLimiter = request.app.state.rate_limiter
    if credentials is None:
        await limiter.hit(_client(request))
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    found = tokens.lookup(credentials.credentials)
    if found is None:
        await limiter.hit(_client(request))  # guessing tokens is throttled per client address
        raise Unauthorized("unknown bearer token")
    token_id, grant = found
    await limiter.hit(f"token:{token_id}")
    return Principal(grant.subject, frozenset(grant.scopes), grant.channel)


def require(*scopes: Scope) -> Callable[..., Awaitable[Principal]]:
    """Return a dependency that authenticates the caller and demands one of `scopes` (admin passes all),
    then refuses query parameters the endpoint does not take."""

    async def dependency(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Principal:
        principal = await authenticate(request, credentials)
        if scopes and not any(principal.has(s) for s in scopes):
            raise Forbidden(f"this needs one of the scopes: {', '.join(s.value for s in scopes)}")
        refuse_unknown_query(request)
        return principal

    return dependency


async def anonymous(request: Request) -> None:
    """Dependency of routes that need no token (a survey answer): rate limited per client address."""
    limiter: RateLimiter = request.app.state.rate_limiter
    await limiter.hit(_client(request))
    refuse_unknown_query(request)


def refuse_unknown_query(request: Request) -> None:
    """Raise 422 naming the first query parameter the matched route does not declare (`?q=`, a typo)."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    allowed = _query_names(route)
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        takes = ", ".join(sorted(allowed)) or "no query parameters"
        raise InvalidRequest(
            f"{unknown[0]}: unknown query parameter (this endpoint takes {takes})", field=unknown[0]
        )


_QUERY_NAMES: dict[int, frozenset[str]] = {}


def _query_names(route: APIRoute) -> frozenset[str]:
    known = _QUERY_NAMES.get(id(route))
    if known is None:
        known = _QUERY_NAMES[id(route)] = _declared_query_names(route)
    return known


def _declared_query_names(route: APIRoute) -> frozenset[str]:
    names: set[str] = set()
    stack: list[Any] = [route.dependant]
    while stack:
        dependant = stack.pop()
        names.update(param.alias for param in dependant.query_params)
        stack.extend(dependant.dependencies)
    return frozenset(names)
