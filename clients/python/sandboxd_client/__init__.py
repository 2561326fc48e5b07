"""Typed Python client for sandboxd: `Client` (blocking) and `AsyncClient` (asyncio).

from sandboxd_client import Client

with Client() as sbx:  # the daemon's unix socket, found as the `sandboxd` CLI finds it
    box = sbx.containers.create(name="demo")
    print(sbx.exec(box.id, "echo hi").output[0].stdout)
"""

from sandboxd_client.aio import AsyncClient
from sandboxd_client.client import Client
from sandboxd_client.discovery import Target, discover
from sandboxd_client.errors import (
    APIError,
    CapacityExceeded,
    Conflict,
    ConnectionFailed,
    ContainerExpired,
    IdempotencyKeyReused,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ProtocolError,
    ProxyUnavailable,
    QuotaExceeded,
    RequestInFlight,
    SandboxBusy,
    SandboxdError,
    SandboxFailed,
    SandboxTimeout,
    SandboxUnavailable,
    ServerError,
    SessionBusy,
    ShuttingDown,
    SocketPermissionDenied,
    StorageFull,
    Timeout,
    Unauthorized,
    UnknownParameter,
)
from sandboxd_client.models import (
    CodeError,
    CodeEvent,
    CodeOutcome,
    CodeResult,
    CodeSession,
    CommandFinished,
    CommandResult,
    Container,
    ContainerEvent,
    ContainerFile,
    Deleted,
    ExecDone,
    ExecEvent,
    ExecResult,
    ExpiresAfter,
    FileObject,
    Outcome,
    OutputChunk,
    Page,
    Skill,
    SkillVersion,
)

__all__ = [
    "APIError", "AsyncClient", "CapacityExceeded", "Client", "CodeError", "CodeEvent",
    "CodeOutcome", "CodeResult", "CodeSession", "CommandFinished", "CommandResult", "Conflict",
    "ConnectionFailed", "Container", "ContainerEvent", "ContainerExpired", "ContainerFile",
    "Deleted", "ExecDone", "ExecEvent", "ExecResult", "ExpiresAfter", "FileObject",
    "IdempotencyKeyReused", "InvalidRequest", "NotFound", "Outcome", "OutputChunk", "Page",
    "PayloadTooLarge", "ProtocolError", "ProxyUnavailable", "QuotaExceeded", "RequestInFlight",
    "SandboxBusy", "SandboxFailed", "SandboxTimeout", "SandboxUnavailable", "SandboxdError",
    "ServerError", "SessionBusy", "ShuttingDown", "Skill", "SkillVersion",
    "SocketPermissionDenied", "StorageFull", "Target", "Timeout", "Unauthorized",
    "UnknownParameter", "discover",
]  # fmt: skip
