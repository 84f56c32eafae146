"""Domain errors: raised by rules, translated to HTTP status codes at the edge."""

from __future__ import annotations


class DomainError(Exception):
    """A request the rules refuse; `status` is the HTTP status the edge answers with."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Forbidden(DomainError):
    status = 403
    code = "forbidden"


class Conflict(DomainError):
    """The request is valid but not in the current state (an illegal transition, a lost race)."""

    status = 409
    code = "conflict"


class InvalidRequest(DomainError):
    status = 422
    code = "invalid_request"


class RetryLater(Exception):
    """A handler lost a race (a guarded write did not match) or met a transient fault: the consumer
    runtime backs off and runs it again, so it re-reads and decides again. Never a dead letter."""
