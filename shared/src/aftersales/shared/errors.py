"""Domain errors, raised by rules and translated to HTTP status codes at the edge; and which failures are
transient (try again later) rather than the fault of a message or a request."""

from __future__ import annotations

from aiokafka.errors import KafkaError
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError, WriteConcernError


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


# Server error codes that say "the database cannot do this now", not "this request is wrong": those the
# drivers retry on their own (primary stepped down, shutting down, host unreachable, network timeout,
# time limit exceeded, ...), an operation's own time limit (MaxTimeMSExpired), lock and write conflicts,
# and a cursor or plan killed under it. Whatever the message, the same call may succeed later.
TRANSIENT_MONGO_CODES = frozenset(
    {
        6,  # HostUnreachable
        7,  # HostNotFound
        24,  # LockTimeout
        43,  # CursorNotFound
        46,  # LockBusy
        50,  # MaxTimeMSExpired
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        112,  # WriteConflict
        134,  # ReadConcernMajorityNotAvailableYet
        175,  # QueryPlanKilled
        189,  # PrimarySteppedDown
        237,  # CursorKilled
        262,  # ExceededTimeLimit
        9001,  # SocketException
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11601,  # Interrupted
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
    }
)
TRANSIENT_MONGO_LABELS = ("RetryableWriteError", "TransientTransactionError")


def is_unavailable(exc: BaseException) -> bool:
    """True when the database or the broker cannot answer now: unreachable, timing out, stepping down,
    or a server error whose code or label says so. Waiting is the only cure, however long it takes."""
    # ConnectionFailure covers AutoReconnect, NetworkTimeout and ServerSelectionTimeoutError.
    if isinstance(exc, (KafkaError, ConnectionError, ConnectionFailure, WriteConcernError)):
        return True
    if not isinstance(exc, PyMongoError):
        return False
    if exc.timeout:  # a client-side or server-side time limit (ExecutionTimeout, a socket timeout)
        return True
    if isinstance(exc, OperationFailure):
        return exc.code in TRANSIENT_MONGO_CODES or any(map(exc.has_error_label, TRANSIENT_MONGO_LABELS))
    return False


def is_transient(exc: BaseException) -> bool:
    """True when an error says "try again later" rather than "this message is bad": the database or
    broker unavailable (`is_unavailable`), a lost race (`RetryLater`) or a handler timeout. Such an error
    backs off and never sends a message to the DLQ."""
    return isinstance(exc, (RetryLater, TimeoutError)) or is_unavailable(exc)
