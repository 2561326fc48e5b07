"""/v1/containers/{id}/code — persistent Python sessions, synchronous or streamed (SSE)."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from daemon.api import serialize
from daemon.api.context import CODE, CONFIG, caller_of, read_json
from daemon.api.output import Captured, SseReply, json_reply, sse_response
from daemon.api.validation import get_int, get_str, reject_unknown
from daemon.code import DEFAULT_SESSION, CodeParams
from daemon.config import Config
from daemon.errors import InvalidRequest, NotFound
from daemon.models import Page

CODE_KEYS = {"code", "session_id", "timeout_ms", "max_output_length", "stream"}
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def body_cap(cfg: Config) -> int:
    """A cell may be `code.max_code_bytes` of UTF-8; leave room for its JSON escaping."""
    return cfg.server.max_json_bytes + 2 * cfg.code.max_code_bytes


def parse_code(body: dict[str, Any], cfg: Config) -> tuple[CodeParams, bool]:
    reject_unknown(body, CODE_KEYS)
    limit = cfg.code.max_code_bytes
    code = get_str(body, "code", max_len=limit)
    try:
        size = len(code.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidRequest("'code' is not valid UTF-8 text.", param="code") from None
    if size > limit:
        raise InvalidRequest(f"'code' exceeds {limit} bytes.", param="code")
    session_id = get_str(body, "session_id", default=DEFAULT_SESSION, max_len=64)
    if not SESSION_ID.fullmatch(session_id):
        raise InvalidRequest(
            "'session_id' must be 1 to 64 letters, digits, '_' or '-'.", param="session_id"
        )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("Invalid type for 'stream': expected a boolean.", param="stream")
    params = CodeParams(
        code=code,
        session_id=session_id,
        timeout_ms=get_int(
            body,
            "timeout_ms",
            default=cfg.code.default_timeout_ms,
            lo=1,
            hi=cfg.code.max_timeout_ms,
        ),
        max_output=get_int(
            body,
            "max_output_length",
            default=cfg.exec.default_max_output,
            lo=0,
            hi=cfg.exec.max_output,
        ),
    )
    return params, stream


async def run(request: web.Request) -> web.StreamResponse:
    cfg = request.app[CONFIG]
    params, stream = parse_code(await read_json(request, body_cap(cfg)), cfg)
    cid = request.match_info["container_id"]
    service, caller = request.app[CODE], caller_of(request)
    if not stream:
        kept = {"stdout": Captured(), "stderr": Captured()}

        async def keep(stream_name: str, data: bytes) -> None:
            kept[stream_name].add(data)

        run = await service.run(caller, cid, params, keep)
        return await json_reply(request, serialize.code_result(run, cid, kept))
    # 404, 400 expired and 429 busy before we commit to a 200 stream
    async with service.leased(caller, cid) as lease:

        async def stream_run(events: SseReply) -> dict[str, Any]:
            async def sink(stream_name: str, data: bytes) -> None:
                await events.output(stream_name, data, type=stream_name)

            result = await service.run_cell(lease, cid, params, sink)
            return {"type": "result", **serialize.code_result(result, cid, {})}

        return await sse_response(request, stream_run, cfg.exec.keepalive_s)


async def list_sessions(request: web.Request) -> web.Response:
    cid = request.match_info["container_id"]
    sessions = await request.app[CODE].sessions(caller_of(request), cid)
    page = Page(sessions, has_more=False)  # oldest first, as the agent keeps them
    return web.json_response(serialize.page(page, lambda s: serialize.code_session(s, cid)))


async def delete_session(request: web.Request) -> web.Response:
    cid, sid = request.match_info["container_id"], request.match_info["session_id"]
    service = request.app[CODE]
    if not SESSION_ID.fullmatch(sid):
        await service.check(caller_of(request), cid)  # the container's 404 comes first
        raise NotFound(f"No code session found with id '{sid[:64]}'.", param="session_id")
    await service.delete_session(caller_of(request), cid, sid)
    return web.json_response(serialize.deleted(sid, "container.code_session"))
