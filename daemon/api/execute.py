"""POST /v1/containers/{id}/exec — shell-tool shaped, synchronous or streamed (SSE)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from daemon.api import serialize
from daemon.api.context import CONFIG, EXEC, caller_of, read_json
from daemon.api.output import EMPTY, Captured, SseReply, json_reply, sse_response
from daemon.api.validation import ENV_NAME, get_int, get_str, reject_unknown
from daemon.config import ExecConfig
from daemon.errors import InvalidRequest
from daemon.exec import ExecParams, ExecService
from daemon.sandboxes import Lease
from sandbox.execution import CommandOutcome
from sandbox.spec import WORKSPACE

EXEC_KEYS = {
    "commands", "timeout_ms", "max_output_length", "env", "working_directory", "stdin", "stream",
}  # fmt: skip
MAX_COMMAND_CHARS = 64 << 10
MAX_ENV = 128


def parse_env_cwd(body: dict[str, Any]) -> tuple[dict[str, str], str]:
    """`env` and `working_directory` of an exec or a process: strings of UTF-8, no NUL."""
    env = body.get("env") or {}
    if not isinstance(env, dict) or len(env) > MAX_ENV:
        raise InvalidRequest(f"'env' must be an object of at most {MAX_ENV} strings.", param="env")
    for key, value in env.items():
        if not ENV_NAME.fullmatch(key) or not isinstance(value, str) or "\0" in value:
            raise InvalidRequest(f"Invalid environment variable {key[:64]!r}.", param="env")
        utf8(value, "env")
    cwd = get_str(body, "working_directory", default=WORKSPACE, max_len=4096)
    if not cwd.startswith("/") or "\0" in cwd:
        raise InvalidRequest(
            "'working_directory' must be an absolute path.", param="working_directory"
        )
    utf8(cwd, "working_directory")
    return dict(env), cwd


def parse_exec(body: dict[str, Any], cfg: ExecConfig) -> tuple[ExecParams, bool]:
    reject_unknown(body, EXEC_KEYS)
    commands = body.get("commands")
    if isinstance(commands, str):
        commands = [commands]
    if (
        not isinstance(commands, list)
        or not commands
        or not all(isinstance(c, str) for c in commands)
    ):
        raise InvalidRequest("'commands' must be a non-empty array of strings.", param="commands")
    if len(commands) > cfg.max_commands:
        raise InvalidRequest(f"At most {cfg.max_commands} commands per call.", param="commands")
    if any(len(c) > MAX_COMMAND_CHARS or "\0" in c for c in commands):
        raise InvalidRequest("A command is too long or contains NUL.", param="commands")
    env, cwd = parse_env_cwd(body)
    stdin = get_str(body, "stdin", default="", max_len=cfg.max_stdin_bytes)
    if len(utf8(stdin, "stdin")) > cfg.max_stdin_bytes:
        raise InvalidRequest(f"'stdin' exceeds {cfg.max_stdin_bytes} bytes.", param="stdin")
    for command in commands:
        utf8(command, "commands")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("Invalid type for 'stream': expected a boolean.", param="stream")
    params = ExecParams(
        commands=commands,
        timeout_ms=get_int(
            body, "timeout_ms", default=cfg.default_timeout_ms, lo=1, hi=cfg.max_timeout_ms
        ),
        max_output=get_int(
            body,
            "max_output_length",
            default=cfg.default_max_output,
            lo=0,
            hi=cfg.max_output,
        ),
        env=dict(env),
        working_directory=cwd,
        stdin=stdin,
    )
    return params, stream


def utf8(value: str, param: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"'{param}' is not valid UTF-8 text.", param=param) from None


async def exec_(request: web.Request) -> web.StreamResponse:
    cfg = request.app[CONFIG].exec
    params, stream = parse_exec(await read_json(request), cfg)
    cid = request.match_info["container_id"]
    service, caller = request.app[EXEC], caller_of(request)
    if not stream:
        kept: dict[tuple[int, str], Captured] = {}

        async def keep(index: int, stream_name: str, data: bytes) -> None:
            kept.setdefault((index, stream_name), Captured()).add(data)

        outcomes = await service.exec(caller, cid, params, keep)
        output = [
            serialize.output_item(o, kept.get((i, "stdout"), EMPTY), kept.get((i, "stderr"), EMPTY))
            for i, o in enumerate(outcomes)
        ]
        reply = {"object": "container.exec", "output": output}
        return await json_reply(request, {**reply, "max_output_length": params.max_output})
    # 404, 400 expired and 429 busy before we commit to a 200 stream
    async with service.leased(caller, cid) as lease:
        return await sse_response(request, _streamed(service, lease, cid, params), cfg.keepalive_s)


def _streamed(
    service: ExecService, lease: Lease, cid: str, params: ExecParams
) -> Callable[[SseReply], Awaitable[dict[str, Any]]]:
    async def run(events: SseReply) -> dict[str, Any]:
        async def sink(index: int, stream_name: str, data: bytes) -> None:
            await events.output((index, stream_name), data, type=stream_name, command_index=index)

        async def finished(index: int, outcome: CommandOutcome) -> None:
            await events.flush((index, "stdout"))
            await events.flush((index, "stderr"))
            item = serialize.output_item(outcome)
            await events.send({"type": "outcome", "command_index": index, **item})

        await service.run(lease, cid, params, sink, finished)
        return {"type": "done", "max_output_length": params.max_output}

    return run
