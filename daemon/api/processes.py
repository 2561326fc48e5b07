"""/v1/containers/{id}/processes — background processes: start, list, retrieve, delete, read
or stream their output from a byte offset, send input and signals."""

from __future__ import annotations

import codecs
from typing import Any

from aiohttp import web

from daemon import ids
from daemon.api import serialize
from daemon.api.context import CONFIG, PROCESSES, caller_of, read_json
from daemon.api.execute import parse_env_cwd, utf8
from daemon.api.output import SseReply, json_reply, sse_response
from daemon.api.validation import get_int, get_str, query_list_params, reject_unknown
from daemon.config import MAX_AGENT_PROCESS_COMMAND, Config
from daemon.errors import InvalidRequest, NotFound
from daemon.processes import SIGNALS, OutputEvent, OutputRead, ProcessParams
from sandbox.agent_client import MAX_TERM_SIZE, ExecChunk, OutputEnd, OutputStart

CREATE_KEYS = {"command", "env", "working_directory", "tty", "cols", "rows"}
DEFAULT_SIZE = (80, 24)  # a terminal's (cols, rows) when not given


def parse_create(body: dict[str, Any]) -> ProcessParams:
    reject_unknown(body, CREATE_KEYS)
    command = get_str(body, "command", max_len=MAX_AGENT_PROCESS_COMMAND)
    if not command or "\0" in command or len(utf8(command, "command")) > MAX_AGENT_PROCESS_COMMAND:
        raise InvalidRequest(
            f"'command' must be 1 to {MAX_AGENT_PROCESS_COMMAND} bytes without NUL.",
            param="command",
        )
    env, cwd = parse_env_cwd(body)
    tty = body.get("tty", False)
    if not isinstance(tty, bool):
        raise InvalidRequest("Invalid type for 'tty': expected a boolean.", param="tty")
    for key in ("cols", "rows"):
        if key in body and not tty:
            raise InvalidRequest(f"'{key}' is only for a terminal ('tty': true).", param=key)
    size = parse_size(body) if tty else None
    return ProcessParams(command=command, env=env, working_directory=cwd, size=size)


def parse_size(body: dict[str, Any]) -> tuple[int, int]:
    """(cols, rows) of a terminal, each 1..MAX_TERM_SIZE (80 x 24 when not given)."""
    cols = get_int(body, "cols", default=DEFAULT_SIZE[0], lo=1, hi=MAX_TERM_SIZE)
    rows = get_int(body, "rows", default=DEFAULT_SIZE[1], lo=1, hi=MAX_TERM_SIZE)
    return cols, rows


def parse_resize(body: dict[str, Any]) -> tuple[int, int]:
    reject_unknown(body, {"cols", "rows"})
    for key in ("cols", "rows"):
        if key not in body:
            raise InvalidRequest(f"Missing required parameter: '{key}'.", param=key)
    return parse_size(body)


def parse_input(body: dict[str, Any], cfg: Config) -> tuple[bytes, bool]:
    reject_unknown(body, {"data", "eof"})
    cap = cfg.processes.max_input_bytes
    data = utf8(get_str(body, "data", default="", max_len=cap), "data")
    if len(data) > cap:
        raise InvalidRequest(f"'data' exceeds {cap} bytes.", param="data")
    eof = body.get("eof", False)
    if not isinstance(eof, bool):
        raise InvalidRequest("Invalid type for 'eof': expected a boolean.", param="eof")
    return data, eof


def parse_signal(body: dict[str, Any]) -> str:
    reject_unknown(body, {"signal"})
    name = get_str(body, "signal", max_len=16).upper().removeprefix("SIG")
    if name not in SIGNALS:
        raise InvalidRequest(
            f"Invalid value for 'signal': expected one of {', '.join(SIGNALS)}.", param="signal"
        )
    return name


def parse_offset(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise InvalidRequest(
            "Invalid value for 'offset': expected a byte offset (0 or more).", param="offset"
        )
    return int(raw)


def parse_output_query(query: Any) -> tuple[int, bool]:
    raw = parse_offset(query.get("offset", "0"))
    stream = query.get("stream", "false")
    if stream not in ("true", "false"):
        raise InvalidRequest("Invalid value for 'stream': expected true or false.", param="stream")
    return raw, stream == "true"


async def process_id(request: web.Request) -> str:
    """The path's process id; a malformed one is a 404 (after the container's own)."""
    pid = request.match_info["process_id"]
    if not ids.PROCESS_ID.fullmatch(pid):
        await request.app[PROCESSES].check(caller_of(request), request.match_info["container_id"])
        raise NotFound(f"No process found with id '{pid[:64]}'.", param="process_id")
    return pid


async def create(request: web.Request) -> web.Response:
    params = parse_create(await read_json(request))
    cid = request.match_info["container_id"]
    started = await request.app[PROCESSES].start(caller_of(request), cid, params)
    return web.json_response(serialize.process(started, cid))


async def list_(request: web.Request) -> web.Response:
    after, limit, desc = query_list_params(request.query, ids.PROCESS_ID)
    cid = request.match_info["container_id"]
    page = await request.app[PROCESSES].list_processes(caller_of(request), cid, after, limit, desc)
    return web.json_response(serialize.page(page, lambda p: serialize.process(p, cid)))


async def retrieve(request: web.Request) -> web.Response:
    pid = await process_id(request)
    cid = request.match_info["container_id"]
    found = await request.app[PROCESSES].get(caller_of(request), cid, pid)
    return web.json_response(serialize.process(found, cid))


async def delete(request: web.Request) -> web.Response:
    pid = await process_id(request)
    cid = request.match_info["container_id"]
    await request.app[PROCESSES].delete(caller_of(request), cid, pid)
    return web.json_response(serialize.deleted(pid, "container.process"))


async def send_input(request: web.Request) -> web.Response:
    pid = await process_id(request)
    data, eof = parse_input(await read_json(request), request.app[CONFIG])
    cid = request.match_info["container_id"]
    pending = await request.app[PROCESSES].send_input(caller_of(request), cid, pid, data, eof)
    return web.json_response(
        {"id": pid, "object": "container.process.input", "bytes": len(data), "eof": eof,
         "pending_bytes": pending}
    )  # fmt: skip


async def send_signal(request: web.Request) -> web.Response:
    pid = await process_id(request)
    name = parse_signal(await read_json(request))
    cid = request.match_info["container_id"]
    found = await request.app[PROCESSES].send_signal(caller_of(request), cid, pid, name)
    return web.json_response(serialize.process(found, cid))


async def resize(request: web.Request) -> web.Response:
    pid = await process_id(request)
    cols, rows = parse_resize(await read_json(request))
    cid = request.match_info["container_id"]
    found = await request.app[PROCESSES].resize(caller_of(request), cid, pid, cols, rows)
    return web.json_response(serialize.process(found, cid))


async def output(request: web.Request) -> web.StreamResponse:
    pid = await process_id(request)
    offset, stream = parse_output_query(request.query)
    cid = request.match_info["container_id"]
    service, caller = request.app[PROCESSES], caller_of(request)
    if not stream:
        read = await service.read_output(caller, cid, pid, offset)
        return await json_reply(request, _output_reply(read, cid, pid))
    # 404 and a bad offset answer before we commit to a 200 stream.
    found = await service.get(caller, cid, pid)
    if offset > found.info.output_bytes:
        raise InvalidRequest(
            f"Invalid value for 'offset': the process has written {found.info.output_bytes} bytes.",
            param="offset",
        )

    async def run(events: SseReply) -> dict[str, Any]:
        at = offset

        async def sink(event: OutputEvent) -> None:
            nonlocal at
            if isinstance(event, ExecChunk):
                await events.output(event.stream, event.data, at=at, type=event.stream)
                at += len(event.data)
            elif isinstance(event, OutputStart):
                at = event.offset
                await events.flush_all()
                await events.send({"type": "start", "offset": at, "dropped": event.dropped})

        end = await service.stream_output(caller, cid, pid, offset, sink)
        if end is None:  # the daemon is stopping: the process runs on
            return {"type": "end", "reason": "shutdown", "next_offset": at}
        return {"type": "exit", "next_offset": end.next_offset,
                "process": serialize.process_info(end.process, cid)}  # fmt: skip

    return await sse_response(request, run, request.app[CONFIG].exec.keepalive_s)


def _output_reply(read: OutputRead, cid: str, pid: str) -> dict[str, Any]:
    """The output as text items, consecutive chunks of one stream merged; each stream has its
    own decoder (a character split across chunks arrives whole)."""
    decoders = {
        name: codecs.getincrementaldecoder("utf-8")("replace") for name in ("stdout", "stderr")
    }
    items: list[dict[str, str]] = []

    def add(stream: str, text: str) -> None:
        if not text:
            return
        if items and items[-1]["stream"] == stream:
            items[-1]["data"] += text
        else:
            items.append({"stream": stream, "data": text})

    for chunk in read.chunks:
        add(chunk.stream, decoders[chunk.stream].decode(chunk.data))
    for name, decoder in decoders.items():
        add(name, decoder.decode(b"", True))
    end: OutputEnd = read.end
    return {
        "object": "container.process.output",
        "container_id": cid,
        "process_id": pid,
        "offset": read.start.offset,
        "dropped": read.start.dropped,
        "next_offset": end.next_offset,
        "output": items,
        "process": serialize.process_info(end.process, cid),
    }
