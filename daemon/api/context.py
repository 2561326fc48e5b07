"""Typed application state and per-request context shared by the handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from daemon.api.body import body_of
from daemon.api.validation import parse_json_object
from daemon.attach import AttachService
from daemon.code import CodeService
from daemon.config import Config
from daemon.container_files import ContainerFileService
from daemon.containers import Caller, ContainerService
from daemon.errors import PayloadTooLarge
from daemon.exec import ExecService
from daemon.idempotency import Idempotency
from daemon.images import ImageService
from daemon.metrics import Metrics
from daemon.ports import PortService
from daemon.processes import ProcessService
from daemon.shutdown import ShutdownControl
from daemon.skills import SkillService
from daemon.user_files import FileService


@dataclass(frozen=True)
class Services:
    """What the handlers call, built by the composition root (daemon/composition.py)."""

    containers: ContainerService
    container_files: ContainerFileService
    exec: ExecService
    code: CodeService
    processes: ProcessService
    attach: AttachService
    ports: PortService
    files: FileService  # /v1/files
    images: ImageService  # /v1/images
    skills: SkillService
    idempotency: Idempotency
    metrics: Metrics


CONFIG = web.AppKey("config", Config)
CONTAINERS = web.AppKey("containers", ContainerService)
CONTAINER_FILES = web.AppKey("container_files", ContainerFileService)
EXEC = web.AppKey("exec", ExecService)
CODE = web.AppKey("code", CodeService)
PROCESSES = web.AppKey("processes", ProcessService)
PORTS = web.AppKey("ports", PortService)
ATTACH = web.AppKey("attach", AttachService)
FILES = web.AppKey("files", FileService)
IMAGES = web.AppKey("images", ImageService)
SKILLS = web.AppKey("skills", SkillService)
IDEMPOTENCY = web.AppKey("idempotency", Idempotency)
METRICS = web.AppKey("metrics", Metrics)
OPENAPI = web.AppKey("openapi", bytes)
SHUTDOWN = web.AppKey("shutdown", ShutdownControl)


def install(app: web.Application, services: Services) -> None:
    app[CONTAINERS] = services.containers
    app[CONTAINER_FILES] = services.container_files
    app[EXEC] = services.exec
    app[CODE] = services.code
    app[PROCESSES] = services.processes
    app[PORTS] = services.ports
    app[ATTACH] = services.attach
    app[FILES] = services.files
    app[IMAGES] = services.images
    app[SKILLS] = services.skills
    app[IDEMPOTENCY] = services.idempotency
    app[METRICS] = services.metrics


CALLER = web.RequestKey("caller", Caller)


def caller_of(request: web.Request) -> Caller:
    return request[CALLER]


async def read_json(request: web.Request, cap: int | None = None) -> dict[str, Any]:
    """The JSON object body, at most `cap` bytes (default: `server.max_json_bytes`)."""
    cap = cap or request.app[CONFIG].server.max_json_bytes
    if request.content_length is not None and request.content_length > cap:
        raise PayloadTooLarge(f"The request body exceeds {cap} bytes.")
    return parse_json_object(await body_of(request).read_bytes(cap))


async def stream_blob(
    request: web.Request, chunks: AsyncIterator[bytes], headers: dict[str, str]
) -> web.StreamResponse:
    """Stream a stored blob; its first chunk is read before the headers go out, so a missing
    blob still answers with an error instead of a truncated 200."""
    first = await anext(chunks, b"")
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    try:
        await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    await response.write_eof()
    return response
