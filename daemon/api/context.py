"""Typed application state and per-request context shared by the handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from daemon.api.body import body_of
from daemon.api.validation import parse_json_object
from daemon.code import CodeService
from daemon.config import Config
from daemon.errors import PayloadTooLarge
from daemon.files import FileService
from daemon.idempotency import Idempotency
from daemon.service import Caller, ContainerService
from daemon.shutdown import ShutdownControl
from daemon.skills import SkillService

CONFIG = web.AppKey("config", Config)
SERVICE = web.AppKey("service", ContainerService)
OPENAPI = web.AppKey("openapi", bytes)
SHUTDOWN = web.AppKey("shutdown", ShutdownControl)
CODE = web.AppKey("code", CodeService)
FILES = web.AppKey("files", FileService)
SKILLS = web.AppKey("skills", SkillService)
IDEMPOTENCY = web.AppKey("idempotency", Idempotency)
CALLER = web.RequestKey("caller", Caller)


def service_of(request: web.Request) -> ContainerService:
    return request.app[SERVICE]


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
