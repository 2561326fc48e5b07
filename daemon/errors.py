"""Domain errors with stable codes, and the one table that maps them to HTTP and OpenAI's
error object. docs/api.md (Errors) lists the table for users: a code added here belongs there
and in daemon/openapi.json's `Error` schema too."""

from __future__ import annotations

from typing import Any, NamedTuple


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


class TooManyProcesses(DomainError):
    """The container runs as many background processes as it may; one must end first."""

    code = "too_many_processes"


class TooManyTerminals(DomainError):
    """The container runs as many terminals (tty processes) as it may; one must end first."""

    code = "too_many_terminals"


class TooManyAttachments(DomainError):
    """As many WebSocket attachments are open on the container as it may have."""

    code = "too_many_attachments"


class ProcessExited(DomainError):
    """Input or a signal for a background process that has ended."""

    code = "process_exited"


class TooManyRelays(DomainError):
    """The container relays as many port requests at once as it may; one must end first."""

    code = "too_many_relays"


class PortUnreachable(DomainError):
    """Nothing accepted the connection to the port inside the sandbox, or its server sent
    something that is not an HTTP response."""

    code = "port_unreachable"


class PortTimeout(DomainError):
    """The server on the port inside the sandbox did not answer within the bound."""

    code = "port_timeout"


class IdempotencyKeyReused(DomainError):
    """The key was first used with another request (method, path or body)."""

    code = "idempotency_key_reused"


class RequestInFlight(DomainError):
    """The first request with this key is still running: retry shortly."""

    code = "request_in_flight"


class SandboxBusy(DomainError):
    """The container's agent has as many operations running and waiting as it may: nothing
    ran, retry after a moment."""

    code = "sandbox_busy"


class StorageFull(DomainError):
    code = "insufficient_storage"


class SandboxUnavailable(DomainError):
    code = "sandbox_unavailable"


class ProxyUnavailable(SandboxUnavailable):
    """The egress proxy is down; its supervisor restarts it within seconds."""

    code = "proxy_unavailable"


class SandboxTimeout(DomainError):
    code = "sandbox_timeout"


class SandboxFailed(DomainError):
    code = "sandbox_failed"


class ShuttingDown(DomainError):
    code = "shutting_down"


class HttpMapping(NamedTuple):
    status: int
    type: str  # OpenAI's error `type`
    retry: bool  # x-should-retry: true only where the same request may succeed later
    retry_after_s: int | None = None  # Retry-After, where the wait is known


HTTP_ERRORS: dict[type[DomainError], HttpMapping] = {
    InvalidRequest: HttpMapping(400, "invalid_request_error", False),
    ContainerExpired: HttpMapping(400, "invalid_request_error", False),
    Unauthorized: HttpMapping(401, "invalid_request_error", False),
    NotFound: HttpMapping(404, "invalid_request_error", False),
    # Another cell holds the session: the agent refused before running anything.
    SessionBusy: HttpMapping(409, "invalid_request_error", True),
    IdempotencyKeyReused: HttpMapping(409, "invalid_request_error", False),
    # Retrying helps once one of the container's processes ends (or is deleted).
    TooManyProcesses: HttpMapping(409, "invalid_request_error", False),
    TooManyTerminals: HttpMapping(409, "invalid_request_error", False),
    TooManyAttachments: HttpMapping(409, "invalid_request_error", False),
    ProcessExited: HttpMapping(409, "invalid_request_error", False),
    # The first request with the key is still running: the same retry will get its reply.
    RequestInFlight: HttpMapping(409, "invalid_request_error", True, 1),
    PayloadTooLarge: HttpMapping(413, "invalid_request_error", False),
    # The owner's container count: retrying helps only once the owner deletes one.
    QuotaExceeded: HttpMapping(429, "quota_exceeded", False),
    # Admission control: the host's memory is committed; a delete (anyone's) makes room.
    CapacityExceeded: HttpMapping(429, "rate_limit_exceeded", True),
    SandboxBusy: HttpMapping(429, "rate_limit_exceeded", True, 1),
    # A relay slot frees as soon as one of the container's open relays ends (when is not
    # known: a response may stream for long).
    TooManyRelays: HttpMapping(429, "rate_limit_exceeded", True),
    SandboxFailed: HttpMapping(500, "server_error", False),
    # The sandbox's own server, not the daemon: a bad gateway, as a reverse proxy says it.
    PortUnreachable: HttpMapping(502, "server_error", False),
    SandboxUnavailable: HttpMapping(503, "server_error", False),
    ProxyUnavailable: HttpMapping(503, "server_error", True, 2),  # health-checked every 2 s
    ShuttingDown: HttpMapping(503, "server_error", True, 2),
    SandboxTimeout: HttpMapping(504, "server_error", False),
    PortTimeout: HttpMapping(504, "server_error", False),
    StorageFull: HttpMapping(507, "server_error", False),
}
UNEXPECTED = HttpMapping(500, "server_error", False)


def retry_headers(mapping: HttpMapping) -> dict[str, str]:
    headers = {"x-should-retry": "true" if mapping.retry else "false"}
    if mapping.retry_after_s is not None:
        headers["Retry-After"] = str(mapping.retry_after_s)
    return headers


def http_error(exc: DomainError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, retry headers) for a domain error."""
    mapping = next((HTTP_ERRORS[c] for c in type(exc).__mro__ if c in HTTP_ERRORS), UNEXPECTED)
    body = {
        "error": {
            "message": exc.message,
            "type": mapping.type,
            "param": exc.param,
            "code": exc.code,
        }
    }
    return mapping.status, body, retry_headers(mapping)


def error_body(message: str, err_type: str, code: str | None, param: str | None = None) -> Any:
    return {"error": {"message": message, "type": err_type, "param": param, "code": code}}
