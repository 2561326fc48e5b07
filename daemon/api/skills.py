"""Handlers for /v1/skills and their versions: multipart uploads staged to disk, zips out."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from daemon import ids
from daemon.api import serialize
from daemon.api.body import Part, body_of
from daemon.api.context import CONFIG, SKILLS, caller_of, read_json, stream_blob
from daemon.api.validation import malformed_multipart, query_list_params, reject_unknown
from daemon.errors import InvalidRequest, PayloadTooLarge
from daemon.models import SkillVersionRecord
from daemon.skills import CHUNK, SkillService, SkillUpload, parse_version

MAX_FIELD_BYTES = 64


async def _receive(request: web.Request, service: SkillService) -> tuple[SkillUpload, bool]:
    """Stage `files` / `files[]` parts in a temp dir with running caps; (upload, default)."""
    cfg = request.app[CONFIG].skills
    cap = cfg.max_zip_bytes
    if not request.content_type.startswith("multipart/"):
        raise InvalidRequest("Send a multipart/form-data body with 'files'.", param="files")
    if request.content_length is not None and request.content_length > cap + (256 << 10):
        raise PayloadTooLarge(f"The skill upload exceeds {cap} bytes.", param="files")
    upload = await service.staging()
    make_default = False
    try:
        with malformed_multipart("files"):
            make_default = await _read_parts(request, upload, cfg.max_files, cap)
        if any(not name for name, _ in upload.parts):
            raise InvalidRequest("Every 'files' part needs a filename.", param="files")
    except BaseException:
        await service.discard(upload)
        raise
    return upload, make_default


async def _read_parts(request: web.Request, upload: SkillUpload, max_files: int, cap: int) -> bool:
    """Stage every `files` / `files[]` part; returns the `default` field."""
    make_default = False
    body = body_of(request)
    total = 0
    while (part := await body.next_part("files")) is not None:
        if part.name in ("files", "files[]"):
            if len(upload.parts) >= max_files:
                raise InvalidRequest(f"The skill holds more than {max_files} files.", param="files")
            upload.as_array = upload.as_array or part.name == "files[]" or bool(upload.parts)
            path = upload.tmp_dir / f"part-{len(upload.parts)}"
            total = await _stage(part, path, total, cap)
            upload.parts.append((part.filename or "", path))
        elif part.name == "default":
            raw = await part.read_chunk(MAX_FIELD_BYTES)
            make_default = raw.strip().lower() in (b"true", b"1")
    return make_default


async def _stage(part: Part, path: Any, total: int, cap: int) -> int:
    f = await asyncio.to_thread(open, path, "xb")
    try:
        while chunk := await part.read_chunk(CHUNK):
            total += len(chunk)
            if total > cap:
                raise PayloadTooLarge(f"The skill upload exceeds {cap} bytes.", param="files")
            await asyncio.to_thread(f.write, chunk)
    finally:
        await asyncio.to_thread(f.close)
    return total


async def create(request: web.Request) -> web.Response:
    service = request.app[SKILLS]
    upload, _ = await _receive(request, service)
    try:
        rec = await service.create(caller_of(request), upload)
    finally:
        await service.discard(upload)
    return web.json_response(serialize.skill(rec))


async def list_(request: web.Request) -> web.Response:
    after, limit, desc = query_list_params(request.query, ids.SKILL_ID, min_limit=0)
    page = await request.app[SKILLS].list_skills(caller_of(request), after, limit, desc)
    return web.json_response(serialize.page(page, serialize.skill))


async def retrieve(request: web.Request) -> web.Response:
    rec = await request.app[SKILLS].get(caller_of(request), request.match_info["skill_id"])
    return web.json_response(serialize.skill(rec))


async def update(request: web.Request) -> web.Response:
    body = await read_json(request)
    reject_unknown(body, {"default_version"})
    raw = body.get("default_version")
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str):
        raise InvalidRequest(
            "Missing or invalid parameter: 'default_version'.", param="default_version"
        )
    number = parse_version(raw, "default_version")
    sid = request.match_info["skill_id"]
    rec = await request.app[SKILLS].set_default(caller_of(request), sid, number)
    return web.json_response(serialize.skill(rec))


async def delete(request: web.Request) -> web.Response:
    sid = request.match_info["skill_id"]
    await request.app[SKILLS].delete(caller_of(request), sid)
    return web.json_response({"id": sid, "object": "skill.deleted", "deleted": True})


async def _serve_zip(
    request: web.Request, service: SkillService, rec: SkillVersionRecord
) -> web.StreamResponse:
    headers = {
        "Content-Type": "application/zip",
        "Content-Disposition": f'attachment; filename="{rec.name}.zip"',
    }
    return await stream_blob(request, service.chunks(rec), headers)


async def content(request: web.Request) -> web.StreamResponse:
    service = request.app[SKILLS]
    rec = await service.default_version(caller_of(request), request.match_info["skill_id"])
    return await _serve_zip(request, service, rec)


async def create_version(request: web.Request) -> web.Response:
    service = request.app[SKILLS]
    sid = request.match_info["skill_id"]
    await service.get(caller_of(request), sid)  # 404 before reading the body
    upload, make_default = await _receive(request, service)
    try:
        rec = await service.add_version(caller_of(request), sid, upload, make_default)
    finally:
        await service.discard(upload)
    return web.json_response(serialize.skill_version(rec))


async def list_versions(request: web.Request) -> web.Response:
    after, limit, desc = query_list_params(request.query, ids.SKILL_VERSION_ID, min_limit=0)
    sid = request.match_info["skill_id"]
    page = await request.app[SKILLS].list_versions(caller_of(request), sid, after, limit, desc)
    return web.json_response(serialize.page(page, serialize.skill_version))


async def retrieve_version(request: web.Request) -> web.Response:
    m = request.match_info
    rec = await request.app[SKILLS].get_version(caller_of(request), m["skill_id"], m["version"])
    return web.json_response(serialize.skill_version(rec))


async def delete_version(request: web.Request) -> web.Response:
    m = request.match_info
    sid = m["skill_id"]
    rec = await request.app[SKILLS].delete_version(caller_of(request), sid, m["version"])
    body = {
        "id": rec.id,
        "object": "skill.version.deleted",
        "deleted": True,
        "version": str(rec.version),
    }
    return web.json_response(body)


async def version_content(request: web.Request) -> web.StreamResponse:
    m = request.match_info
    service = request.app[SKILLS]
    rec = await service.get_version(caller_of(request), m["skill_id"], m["version"])
    return await _serve_zip(request, service, rec)
