"""Typed Python client for sandboxd: `Client` (blocking) and `AsyncClient` (asyncio).

from sandboxd_client import Client

with Client() as sbx:  # the daemon's unix socket, found as the `sandboxd` CLI finds it
    box = sbx.containers.create(name="demo")
    print(sbx.exec(box.id, "echo hi").output[0].stdout)
"""

from typing import TYPE_CHECKING, Any

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
    ProcessExited,
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
    StreamEnded,
    Timeout,
    TooManyProcesses,
    Unauthorized,
    UnknownParameter,
)
from sandboxd_client.models import (
    Attached,
    AttachError,
    AttachEvent,
    AttachExit,
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
    Dropped,
    ExecDone,
    ExecEvent,
    ExecResult,
    ExpiresAfter,
    FileObject,
    Image,
    Outcome,
    OutputChunk,
    OutputEnd,
    OutputStart,
    Page,
    PortResponse,
    Process,
    ProcessChunk,
    ProcessEvent,
    ProcessExit,
    ProcessInput,
    ProcessOutput,
    ProcessOutputItem,
    Skill,
    SkillVersion,
    WriterChanged,
)

if TYPE_CHECKING:
    from sandboxd_client.aio import AsyncAttachment, AsyncClient
    from sandboxd_client.attach import Attachment
    from sandboxd_client.client import Client
    from sandboxd_client.forward import PortForward

# The HTTP stack loads with the first client made, not with this package: a command line
# that only needs the models, errors or discovery starts without it.
_LAZY = {
    "AsyncAttachment": "sandboxd_client.aio",
    "AsyncClient": "sandboxd_client.aio",
    "Attachment": "sandboxd_client.attach",
    "Client": "sandboxd_client.client",
    "PortForward": "sandboxd_client.forward",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sandboxd_client' has no attribute {name!r}")


__all__ = [
    "APIError",
    "AsyncAttachment",
    "AsyncClient",
    "AttachError",
    "AttachEvent",
    "AttachExit",
    "Attached",
    "Attachment",
    "CapacityExceeded",
    "Client",
    "CodeError",
    "CodeEvent",
    "CodeOutcome",
    "CodeResult",
    "CodeSession",
    "CommandFinished",
    "CommandResult",
    "Conflict",
    "ConnectionFailed",
    "Container",
    "ContainerEvent",
    "ContainerExpired",
    "ContainerFile",
    "Deleted",
    "Dropped",
    "ExecDone",
    "ExecEvent",
    "ExecResult",
    "ExpiresAfter",
    "FileObject",
    "IdempotencyKeyReused",
    "Image",
    "InvalidRequest",
    "NotFound",
    "Outcome",
    "OutputChunk",
    "OutputEnd",
    "OutputStart",
    "Page",
    "PayloadTooLarge",
    "PortForward",
    "PortResponse",
    "Process",
    "ProcessChunk",
    "ProcessEvent",
    "ProcessExit",
    "ProcessExited",
    "ProcessInput",
    "ProcessOutput",
    "ProcessOutputItem",
    "ProtocolError",
    "ProxyUnavailable",
    "QuotaExceeded",
    "RequestInFlight",
    "SandboxBusy",
    "SandboxFailed",
    "SandboxTimeout",
    "SandboxUnavailable",
    "SandboxdError",
    "ServerError",
    "SessionBusy",
    "ShuttingDown",
    "Skill",
    "SkillVersion",
    "SocketPermissionDenied",
    "StorageFull",
    "StreamEnded",
    "Target",
    "Timeout",
    "TooManyProcesses",
    "Unauthorized",
    "UnknownParameter",
    "WriterChanged",
    "discover",
]  # fmt: skip
