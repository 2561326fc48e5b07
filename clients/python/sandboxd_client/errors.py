"""One exception tree for everything a call can end in.

`APIError` and its subclasses are the daemon's error objects, one class per error code (the
daemon's table is daemon/errors.py); their message names the request id, which is what the
daemon's log is searched by. The others are about reaching the daemon at all.
"""

from __future__ import annotations

from typing import Any


class SandboxdError(Exception):
    """Anything a sandboxd_client call raises."""


class ConnectionFailed(SandboxdError):
    """Nothing answers at the socket or URL, or the connection broke off mid-reply."""


class SocketPermissionDenied(ConnectionFailed):
    """The socket exists but this user may not connect to it (not in its group)."""


class Timeout(ConnectionFailed):
    """The daemon did not answer within the client's timeout."""


class ProtocolError(SandboxdError):
    """The daemon's reply is not what the API promises (not JSON, an unknown event, ...)."""


class StreamEnded(ProtocolError):
    """An event stream ended before its last event (the daemon went away mid-stream)."""


class APIError(SandboxdError):
    """The daemon answered with an error object."""

    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int,
        request_id: str | None,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,  # the error object's own field name
    ) -> None:
        suffix = f" (request {request_id})" if request_id else ""
        super().__init__(f"{message}{suffix}")
        self.message = message
        self.status = status
        self.request_id = request_id
        self.param = param
        self.type = type
        if code is not None:
            self.code = code


class InvalidRequest(APIError):
    code = "invalid_request"


class UnknownParameter(InvalidRequest):
    code = "unknown_parameter"


class ContainerExpired(InvalidRequest):
    code = "container_expired"


class Unauthorized(APIError):
    code = "invalid_api_key"


class NotFound(APIError):
    code = "not_found"


class Conflict(APIError):
    """409: the request clashes with one running or made before."""


class SessionBusy(Conflict):
    code = "session_busy"


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"


class RequestInFlight(Conflict):
    code = "request_in_flight"


class TooManyProcesses(Conflict):
    """The container runs as many background processes as it may; one must end first."""

    code = "too_many_processes"


class ProcessExited(Conflict):
    """Input or a signal for a background process that has ended."""

    code = "process_exited"


class PayloadTooLarge(APIError):
    code = "payload_too_large"


class QuotaExceeded(APIError):
    code = "quota_exceeded"


class CapacityExceeded(QuotaExceeded):
    code = "insufficient_capacity"


class SandboxBusy(APIError):
    code = "sandbox_busy"


class ServerError(APIError):
    """5xx without a more precise code."""


class SandboxFailed(ServerError):
    code = "sandbox_failed"


class SandboxUnavailable(ServerError):
    code = "sandbox_unavailable"


class ProxyUnavailable(SandboxUnavailable):
    code = "proxy_unavailable"


class ShuttingDown(ServerError):
    code = "shutting_down"


class SandboxTimeout(ServerError):
    code = "sandbox_timeout"


class StorageFull(ServerError):
    code = "insufficient_storage"


_CODED: tuple[type[APIError], ...] = (
    InvalidRequest, UnknownParameter, ContainerExpired, Unauthorized, NotFound, SessionBusy,
    IdempotencyKeyReused, RequestInFlight, PayloadTooLarge, QuotaExceeded, CapacityExceeded,
    SandboxBusy, SandboxFailed, SandboxUnavailable, ProxyUnavailable, ShuttingDown,
    SandboxTimeout, StorageFull, TooManyProcesses, ProcessExited,
)  # fmt: skip
BY_CODE: dict[str, type[APIError]] = {cls.code: cls for cls in _CODED if cls.code is not None}
BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequest, 401: Unauthorized, 404: NotFound, 409: Conflict, 413: PayloadTooLarge,
    429: QuotaExceeded,
}  # fmt: skip


def api_error(status: int, body: Any, request_id: str | None, raw: bytes = b"") -> APIError:
    """The exception for an error reply (or an SSE `error` event's object)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        lines = raw.decode(errors="replace").strip().splitlines()
        message = f"HTTP {status}: {lines[0] if lines else 'no detail'}"
        return _class_for(None, status)(message, status=status, request_id=request_id)
    code = error.get("code") if isinstance(error.get("code"), str) else None
    param = error.get("param") if isinstance(error.get("param"), str) else None
    kind = error.get("type") if isinstance(error.get("type"), str) else None
    cls = _class_for(code, status)
    return cls(
        error["message"], status=status, request_id=request_id, code=code, param=param, type=kind
    )


def _class_for(code: str | None, status: int) -> type[APIError]:
    if code is not None and code in BY_CODE:
        return BY_CODE[code]
    if status >= 500:
        return ServerError
    return BY_STATUS.get(status, APIError)
