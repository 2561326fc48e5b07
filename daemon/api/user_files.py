"""Handlers for /v1/files: multipart upload streamed to a blob, list, retrieve, content, delete."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from daemon import ids
from daemon.api import serialize
from daemon.api.body import Part, body_of
from daemon.api.context import CONFIG, FILES, caller_of, stream_blob
from daemon.api.validation import malformed_multipart, query_list_params
from daemon.config import FilesConfig
from daemon.errors import InvalidRequest, PayloadTooLarge
from daemon.user_files import CHUNK, PURPOSES, StagedBlob, api_filename

MAX_LIST_LIMIT = 10_000  # and the default, as OpenAI's spec says
MAX_FIELD_BYTES = 1024  # purpose, expires_after[...]
MAX_PARTS = 16
FIELDS = ("purpose", "expires_after[anchor]", "expires_after[seconds]")


async def _field(part: Part) -> str:
    raw = bytearray()
    while chunk := await part.read_chunk(MAX_FIELD_BYTES):
        raw += chunk
        if len(raw) > MAX_FIELD_BYTES:
            raise InvalidRequest(f"'{part.name}' is too long.", param=part.name)
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InvalidRequest(f"'{part.name}' is not UTF-8.", param=part.name) from None


def _parse_fields(fields: dict[str, str], cfg: FilesConfig) -> tuple[str, int | None]:
    purpose = fields.get("purpose")
    if purpose is None:
        raise InvalidRequest("Missing required parameter: 'purpose'.", param="purpose")
    if purpose not in PURPOSES:
        choices = ", ".join(f"'{p}'" for p in PURPOSES)
        raise InvalidRequest(
            f"Invalid value for 'purpose': expected one of {choices}.", param="purpose"
        )
    anchor = fields.get("expires_after[anchor]")
    raw_seconds = fields.get("expires_after[seconds]")
    if anchor is None and raw_seconds is None:
        return purpose, None
    if anchor != "created_at":
        raise InvalidRequest(
            "Invalid value for 'expires_after.anchor': expected 'created_at'.",
            param="expires_after.anchor",
        )
    lo, hi = cfg.min_expires_seconds, cfg.max_expires_seconds
    try:
        seconds = int(raw_seconds or "")
    except ValueError:
        raise InvalidRequest(
            "Invalid type for 'expires_after.seconds': expected an integer.",
            param="expires_after.seconds",
        ) from None
    if not lo <= seconds <= hi:
        raise InvalidRequest(
            f"Invalid value for 'expires_after.seconds': expected {lo} to {hi}, got {seconds}.",
            param="expires_after.seconds",
        )
    return purpose, seconds


async def create(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG].files
    service = request.app[FILES]
    caller = caller_of(request)
    if not request.content_type.startswith("multipart/"):
        raise InvalidRequest("Send a multipart/form-data body with a 'file' part.", param="file")
    if request.content_length is not None and request.content_length > cfg.max_file_bytes + (
        64 << 10
    ):
        raise PayloadTooLarge(f"The file exceeds {cfg.max_file_bytes} bytes.", param="file")
    fields: dict[str, str] = {}
    staged: StagedBlob | None = None
    filename = ""
    try:
        with malformed_multipart("file"):
            staged, filename = await _read_parts(request, fields)
        if staged is None:
            raise InvalidRequest("Missing required parameter: 'file'.", param="file")
        purpose, seconds = _parse_fields(fields, cfg)
        rec = await service.commit(caller, staged, filename, purpose, seconds)
    finally:
        if staged is not None:
            await service.discard(staged)
    return web.json_response(serialize.user_file(rec))


async def _read_parts(
    request: web.Request, fields: dict[str, str]
) -> tuple[StagedBlob | None, str]:
    """The `file` part staged to disk (and its filename); small fields go into `fields`."""
    service = request.app[FILES]
    body = body_of(request)
    staged: StagedBlob | None = None
    filename = ""
    try:
        for _ in range(MAX_PARTS):
            part = await body.next_part("file")
            if part is None:
                break
            if part.name == "file":
                if staged is not None:
                    raise InvalidRequest("Send exactly one 'file' part.", param="file")
                if not part.filename:
                    raise InvalidRequest("The 'file' part needs a filename.", param="file")
                filename = api_filename(part.filename)
                staged = await service.receive(caller_of(request), _chunks(part))
            elif part.name in FIELDS:
                fields[part.name] = await _field(part)
        else:
            raise InvalidRequest(f"At most {MAX_PARTS} parts are accepted.")
    except BaseException:
        if staged is not None:
            await service.discard(staged)
        raise
    return staged, filename


async def _chunks(part: Part) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(CHUNK):
        yield chunk


async def list_(request: web.Request) -> web.Response:
    after, limit, desc = query_list_params(
        request.query, ids.USER_FILE_ID, max_limit=MAX_LIST_LIMIT, default=MAX_LIST_LIMIT
    )
    purpose = request.query.get("purpose") or None
    if purpose is not None and purpose not in PURPOSES:
        raise InvalidRequest("Invalid value for 'purpose'.", param="purpose")
    page = await request.app[FILES].list_files(caller_of(request), purpose, after, limit, desc)
    return web.json_response(serialize.page(page, serialize.user_file))


async def retrieve(request: web.Request) -> web.Response:
    rec = await request.app[FILES].get(caller_of(request), request.match_info["file_id"])
    return web.json_response(serialize.user_file(rec))


async def content(request: web.Request) -> web.StreamResponse:
    service = request.app[FILES]
    rec = await service.get(caller_of(request), request.match_info["file_id"])
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(rec.bytes)}
    return await stream_blob(request, service.chunks(rec), headers)


async def delete(request: web.Request) -> web.Response:
    fid = request.match_info["file_id"]
    await request.app[FILES].delete(caller_of(request), fid)
    body: dict[str, Any] = {"id": fid, "object": "file", "deleted": True}
    return web.json_response(body)
