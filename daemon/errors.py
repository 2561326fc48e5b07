"""Domain errors with stable codes, and the one table that maps them to HTTP and OpenAI's
error object."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code: str = "error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(DomainError):
    code = "invalid_request"


class UnknownParameter(InvalidRequest):
    code = "unknown_parameter"


class NotFound(DomainError):
    code = "not_found"


class ContainerExpired(DomainError):
    code = "container_expired"

    def __init__(self) -> None:
        super().__init__("Container is expired.")


class PayloadTooLarge(DomainError):
    code = "payload_too_large"


class Unauthorized(DomainError):
    code = "invalid_api_key"


class QuotaExceeded(DomainError):
    code = "quota_exceeded"


class CapacityExceeded(QuotaExceeded):
    """The host's memory is committed (admission control); deleting a container helps."""

    code = "insufficient_capacity"


class SessionBusy(DomainError):
    code = "session_busy"


class IdempotencyKeyReused(DomainError):
    """The key was first used with another request (method, path or body)."""

    code = "idempotency_key_reused"


class RequestInFlight(DomainError):
    """The first request with this key is still running: retry shortly."""

    code = "request_in_flight"


class StorageFull(DomainError):
    code = "insufficient_storage"


class SandboxUnavailable(DomainError):
    code = "sandbox_unavailable"


class SandboxFailed(DomainError):
    code = "sandbox_failed"


class ShuttingDown(DomainError):
    code = "shutting_down"


# class -> (HTTP status, OpenAI error type, should the client retry)
HTTP_ERRORS: dict[type[DomainError], tuple[int, str, bool]] = {
    InvalidRequest: (400, "invalid_request_error", False),
    ContainerExpired: (400, "invalid_request_error", False),
    Unauthorized: (401, "invalid_request_error", False),
    NotFound: (404, "invalid_request_error", False),
    SessionBusy: (409, "invalid_request_error", False),
    IdempotencyKeyReused: (409, "invalid_request_error", False),
    RequestInFlight: (409, "invalid_request_error", True),
    PayloadTooLarge: (413, "invalid_request_error", False),
    QuotaExceeded: (429, "quota_exceeded", False),
    CapacityExceeded: (429, "rate_limit_error", True),
    SandboxFailed: (500, "server_error", False),
    SandboxUnavailable: (503, "server_error", False),
    StorageFull: (507, "server_error", False),
    ShuttingDown: (503, "server_error", True),
}


def http_error(exc: DomainError) -> tuple[int, dict[str, Any], bool]:
    """(status, body, retryable) for a domain error."""
    for cls in type(exc).__mro__:
        if cls in HTTP_ERRORS:
            status, err_type, retry = HTTP_ERRORS[cls]
            break
    else:
        status, err_type, retry = 500, "server_error", False
    body = {
        "error": {
            "message": exc.message,
            "type": err_type,
            "param": exc.param,
            "code": exc.code,
        }
    }
    return status, body, retry


def error_body(message: str, err_type: str, code: str | None, param: str | None = None) -> Any:
    return {"error": {"message": message, "type": err_type, "param": param, "code": code}}
