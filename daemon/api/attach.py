"""GET /v1/containers/{id}/processes/{pid}/attach — a WebSocket to a background process
(daemon/attach.py): its output as binary messages, the client's binary messages as its input,
and small JSON text messages both ways (docs/api.md, "Terminals").

Server to client: first {"type": "attached", "process", "offset", "writer"}; then the output
from `offset` (binary), {"type": "dropped", "bytes"} where the ring no longer held some,
{"type": "writer", "writer"} when this attachment's role changes, {"type": "error", "code",
"message"} for a refused message (the connection stays open; input the process is not
reading yet is held for up to `exec.keepalive_s`, the next message waiting, so TCP slows the
client down), and once the process has ended and all its output is sent {"type": "exit",
"exit_code", "killed", "offset"}, then close 1000.
Client to server: binary input; {"type": "resize", "cols", "rows"}, {"type": "signal",
"signal"}, {"type": "eof"}. A message over `processes.max_frame_bytes` closes with 1009; the
daemon's shutdown and the container's end close with 1001 (the process, if any, runs on).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web

from daemon.api import serialize
from daemon.api.context import ATTACH, CONFIG, caller_of
from daemon.api.processes import parse_offset, parse_signal, parse_size, process_id
from daemon.api.validation import reject_unknown
from daemon.attach import Attachment
from daemon.errors import DomainError, InvalidRequest, SandboxBusy, SandboxUnavailable
from daemon.processes import Output
from daemon.shutdown import cut_short
from sandbox.agent_client import ExecChunk, OutputEnd, OutputStart

logger = logging.getLogger(__name__)

CLOSE_GRACE_S = 1.0  # for the client's answer to our close
GOING_AWAY = 1001
CONTROL_TYPES = ("resize", "signal", "eof")
INPUT_RETRY_S = (0.01, 0.2)  # first and longest wait before offering held input again


def parse_attach_query(query: Any) -> tuple[int | None, bool]:
    raw = query.get("offset")
    offset = None if raw is None else parse_offset(raw)
    mode = query.get("mode", "rw")
    if mode not in ("rw", "ro"):
        raise InvalidRequest("Invalid value for 'mode': expected rw or ro.", param="mode")
    return offset, mode == "rw"


async def attach(request: web.Request) -> web.StreamResponse:
    pid = await process_id(request)
    offset, rw = parse_attach_query(request.query)
    cid = request.match_info["container_id"]
    cfg = request.app[CONFIG]
    ws = web.WebSocketResponse(
        heartbeat=cfg.exec.keepalive_s,
        max_msg_size=cfg.processes.max_frame_bytes + 1,  # aiohttp refuses a message of its size
        timeout=CLOSE_GRACE_S,
        compress=False,
    )
    async with request.app[ATTACH].attach(caller_of(request), cid, pid, offset, rw) as att:
        if not ws.can_prepare(request).ok:
            raise InvalidRequest("This route is a WebSocket: send an upgrade (RFC 6455).")
        await ws.prepare(request)
        start = att.process.info.output_bytes if offset is None else offset
        await Session(request, ws, att, cid).run(start)
    return ws


class Session:
    """One attachment's WebSocket: sends go through one lock (three tasks send)."""

    def __init__(
        self, request: web.Request, ws: web.WebSocketResponse, att: Attachment, cid: str
    ) -> None:
        self._request = request
        self._hold_s = request.app[CONFIG].exec.keepalive_s  # the longest input is held
        self._stalled = False  # input was held that long: refuse it at once until taken
        self._ws = ws
        self._att = att
        self._cid = cid
        self._lock = asyncio.Lock()

    async def _send(self, message: dict[str, Any] | bytes) -> None:
        """One message to the client; none once it has gone (its close ends the session)."""
        async with self._lock:
            if self._ws.closed:
                return
            try:
                if isinstance(message, bytes):
                    await self._ws.send_bytes(message)
                else:
                    await self._ws.send_str(json.dumps(message, separators=(",", ":")))
            except ConnectionError:
                pass

    async def run(self, offset: int) -> None:
        ws, att = self._ws, self._att
        try:
            async with att.output(offset) as events, cut_short(att.stopping) as cut:
                first = await anext(events)
                assert isinstance(first, OutputStart)
                await self._send(
                    {"type": "attached", "process": serialize.process(att.process, self._cid),
                     "offset": first.offset, "writer": att.writer}
                )  # fmt: skip
                if first.dropped:
                    await self._send({"type": "dropped", "bytes": first.dropped})
                ended = await self._serve(events)
            if cut.happened:
                await ws.close(code=GOING_AWAY, message=b"the daemon is shutting down")
            elif ended:
                await ws.close(code=1000)
        except SandboxUnavailable:
            # The container was deleted or expired (its agent went with it), or cannot be
            # reached: the process is gone with it, or out of reach.
            await ws.close(code=GOING_AWAY, message=b"the container is gone")
        except DomainError as exc:
            logger.info("attachment failed", extra={"process_id": att.pid, "error": exc.code})
            await self._error(exc.code, exc.message)
            await ws.close(code=1011, message=exc.code.encode())

    async def _serve(self, events: Output) -> bool:
        """Output out and messages in, until the process has ended (True: its exit message
        was sent) or the client has left; a failure of either is raised here (the tasks are
        this call's, cancelled on the way out, so the close has no reader beside it)."""
        loop = asyncio.get_running_loop()
        output = loop.create_task(self._output(events))
        incoming = loop.create_task(self._incoming())
        roles = loop.create_task(self._roles())
        try:
            await asyncio.wait((output, incoming), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (output, incoming, roles):
                task.cancel()
            await asyncio.wait((output, incoming, roles))
        for task in (output, incoming):
            if not task.cancelled() and (exc := task.exception()) is not None:
                raise exc
        return output.done() and not output.cancelled() and output.result()

    async def _output(self, events: Output) -> bool:
        """The process's output to the client, then its exit message (True)."""
        att = self._att
        async for event in events:
            if isinstance(event, ExecChunk):
                await self._send(event.data)
                att.sent(len(event.data))
            elif isinstance(event, OutputStart):  # a gap: the ring moved on past this reader
                await self._send({"type": "dropped", "bytes": event.dropped})
            elif isinstance(event, OutputEnd):
                ended = await att.ended(event)
                await self._send(
                    {"type": "exit", "exit_code": ended.info.exit_code, "killed": ended.killed,
                     "offset": event.next_offset}
                )  # fmt: skip
                return True
        return False

    async def _roles(self) -> None:
        att = self._att
        while True:
            await att.role_changed.wait()
            att.role_changed.clear()
            await self._send({"type": "writer", "writer": att.writer})

    async def _incoming(self) -> None:
        """The client's messages, each answered with an error message if refused, until it
        closes (or sends a message over the cap: aiohttp closes with 1009)."""
        async for msg in self._ws:
            try:
                if msg.type == WSMsgType.BINARY:
                    await self._input(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    await self._control(msg.data)
            except InvalidRequest as exc:
                await self._error("invalid_message", exc.message)
            except DomainError as exc:
                await self._error(exc.code, exc.message)

    async def _input(self, data: bytes) -> None:
        """`data` to the process. While its pending input is full (SandboxBusy: the process
        reads slower than the client sends) the same bytes are offered again after a growing
        wait, and no further message is read meanwhile: TCP pushes back on the client. It
        stops when they are taken, when the connection has gone, with this task (the
        process's end, the daemon's shutdown), or on any other refusal (ProcessExited...,
        raised). After `exec.keepalive_s` the refusal is raised too, and so is each next
        one at once until input is taken again: unread, the connection carries no pong, and
        the heartbeat would soon drop it as dead; reading on lets it see the client's."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._hold_s
        wait, longest = INPUT_RETRY_S
        while True:
            try:
                await self._att.send_input(data)
                self._stalled = False
                return
            except SandboxBusy:
                transport = self._request.transport
                if transport is None or transport.is_closing():
                    return  # nobody to push back on: the client is gone
                if self._stalled or loop.time() >= give_up:
                    self._stalled = True
                    raise
            await asyncio.sleep(wait)
            wait = min(wait * 2, longest)

    async def _control(self, text: str) -> None:
        try:
            body = json.loads(text)
        except ValueError:
            raise InvalidRequest("A text message must be a JSON object.") from None
        kind = body.get("type") if isinstance(body, dict) else None
        if kind not in CONTROL_TYPES:
            raise InvalidRequest(
                "A text message must be a JSON object with 'type' resize, signal or eof."
            )
        fields = {k: v for k, v in body.items() if k != "type"}
        if kind == "resize":
            reject_unknown(fields, {"cols", "rows"})
            if set(fields) != {"cols", "rows"}:
                raise InvalidRequest("A resize needs 'cols' and 'rows'.")
            await self._att.resize(*parse_size(fields))
        elif kind == "signal":
            await self._att.signal(parse_signal(fields))
        else:
            reject_unknown(fields, set())
            await self._att.close_input()

    async def _error(self, code: str, message: str) -> None:
        await self._send({"type": "error", "code": code, "message": message})
