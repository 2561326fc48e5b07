"""Handlers for /v1/containers/{id}/files."""

from __future__ import annotations

import mimetypes
from collections.abc import AsyncIterator

from aiohttp import web

from daemon import ids
from daemon.api import serialize
from daemon.api.body import body_of
from daemon.api.context import CONFIG, CONTAINER_FILES, caller_of, read_json
from daemon.api.validation import get_str, malformed_multipart, query_list_params, reject_unknown
from daemon.errors import InvalidRequest, PayloadTooLarge
from daemon.user_files import api_filename

CHUNK = 256 << 10


async def upload(request: web.Request) -> web.Response:
    cid = request.match_info["container_id"]
    cap = request.app[CONFIG].containers.max_upload_bytes
    if request.content_type == "application/json":
        body = await read_json(request)
        reject_unknown(body, {"file_id"})
        file_id = get_str(body, "file_id", max_len=128)
        rec = await request.app[CONTAINER_FILES].copy_file(caller_of(request), cid, file_id)
        return web.json_response(serialize.container_file(rec))
    if not request.content_type.startswith("multipart/"):
        raise InvalidRequest("Send a multipart/form-data body with a 'file' part.", param="file")
    if request.content_length is not None and request.content_length > cap + (64 << 10):
        raise PayloadTooLarge(f"The upload exceeds {cap} bytes.", param="file")
    parts = body_of(request)
    with malformed_multipart("file"):
        while True:
            part = await parts.next_part("file")
            if part is None:
                raise InvalidRequest("Missing required parameter: 'file'.", param="file")
            if part.name == "file":
                break
    if not part.filename:
        raise InvalidRequest("The 'file' part needs a filename.", param="file")
    filename = api_filename(part.filename)  # every byte kept, in UTF-8 (sandbox/pathnames.py)

    async def chunks() -> AsyncIterator[bytes]:
        total = 0
        while True:
            with malformed_multipart("file"):
                chunk = await part.read_chunk(CHUNK)
            if not chunk:
                return
            total += len(chunk)
            if total > cap:
                raise PayloadTooLarge(f"The upload exceeds {cap} bytes.", param="file")
            yield chunk

    rec = await request.app[CONTAINER_FILES].upload(caller_of(request), cid, filename, chunks())
    return web.json_response(serialize.container_file(rec))


async def list_(request: web.Request) -> web.Response:
    after, limit, desc = query_list_params(request.query, ids.CONTAINER_FILE_ID)
    cid = request.match_info["container_id"]
    page = await request.app[CONTAINER_FILES].list_files(
        caller_of(request), cid, after, limit, desc
    )
    body = serialize.page(page, serialize.container_file)
    body["workspace_truncated"] = page.truncated  # ours: records cover only the first paths
    return web.json_response(body)


async def retrieve(request: web.Request) -> web.Response:
    m = request.match_info
    rec = await request.app[CONTAINER_FILES].get_file(
        caller_of(request), m["container_id"], m["file_id"]
    )
    return web.json_response(serialize.container_file(rec))


async def content(request: web.Request) -> web.StreamResponse:
    m = request.match_info
    service = request.app[CONTAINER_FILES]
    async with service.file_content(caller_of(request), m["container_id"], m["file_id"]) as (
        rec,
        size,
        chunks,
    ):
        media_type = mimetypes.guess_type(rec.path)[0] or "application/octet-stream"
        response = web.StreamResponse(
            headers={"Content-Type": media_type, "Content-Length": str(size)}
        )
        await response.prepare(request)
        async for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
    return response


async def delete(request: web.Request) -> web.Response:
    m = request.match_info
    await request.app[CONTAINER_FILES].delete_file(
        caller_of(request), m["container_id"], m["file_id"]
    )
    return web.json_response(serialize.deleted(m["file_id"], "container.file"))
