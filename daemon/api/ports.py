"""/v1/containers/{id}/ports/{port}/{path} — an HTTP request relayed to 127.0.0.1:{port}
inside the container (daemon/ports.py), its response streamed back as the server sends it;
a WebSocket handshake the server accepts is relayed message by message (daemon/websocket.py)
until either side closes, or the daemon shuts down (both sides get a close, 1001: a relayed
WebSocket never holds the drain; an HTTP relay finishes within it).

The request body is read from the client as it arrives, never as a JSON body: the server's
`max_json_bytes` does not apply to it (aiohttp's client_max_size bounds only whole-body reads,
which this handler never makes)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator

from aiohttp import WSMsgType, web

from daemon import websocket
from daemon.api.context import PORTS, caller_of
from daemon.errors import InvalidRequest
from daemon.ports import CHUNK, RELAYED, PortService, RelayRequest, wants_websocket
from daemon.shutdown import cut_short
from sandbox.agent_client import PortStream

ROUTE = "/ports/{port}/{path:.*}"
CLOSE_GRACE_S = 2.0  # for the server's answer to our close, after the caller's
GOING_AWAY = struct.pack("!H", 1001)


async def _client_body(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(CHUNK):
        yield chunk


def relay_request(request: web.Request) -> RelayRequest:
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    length = request.content_length if not chunked else None
    # The path as the client encoded it (match_info's is decoded: a %20 would become a space
    # on the request line), after /v1/containers/{id}/ports/{port}/, and the query as sent.
    path, sep, query = request.raw_path.partition("?")
    target = "/" + path.split("/", 6)[6] + sep + query
    headers = list(request.headers.items())
    ws = wants_websocket(request.method, headers)
    if ws and not web.WebSocketResponse().can_prepare(request).ok:
        raise InvalidRequest("The WebSocket handshake is malformed (RFC 6455, version 13).")
    return RelayRequest(
        method=request.method,
        target=target,
        headers=headers,
        content_length=length,
        chunked=chunked,
        body=_client_body(request),
        websocket=ws,
    )


async def relay(request: web.Request) -> web.StreamResponse:
    service = request.app[PORTS]
    cid = request.match_info["container_id"]
    req = relay_request(request)
    port = request.match_info["port"]
    async with service.relay(caller_of(request), cid, port, req) as reply:
        if reply.websocket is not None:
            protocols = tuple(v for _, v in reply.headers)
            ws = web.WebSocketResponse(
                protocols=protocols, max_msg_size=websocket.MAX_MESSAGE, timeout=CLOSE_GRACE_S
            )
            ws.headers[RELAYED] = str(int(port))
            await ws.prepare(request)
            async with cut_short(service.stopping) as cut:
                await _pipe(ws, reply.websocket, service)
            if cut.happened:  # the daemon stops: both ends are told, neither waited for
                with contextlib.suppress(ConnectionError):
                    reply.websocket.writer.write(websocket.frame(websocket.CLOSE, GOING_AWAY))
                with contextlib.suppress(TimeoutError):  # a caller that stopped reading
                    async with asyncio.timeout(CLOSE_GRACE_S):
                        await ws.close(code=1001, message=b"the daemon is shutting down")
            return ws
        response = web.StreamResponse(status=reply.status, reason=reply.reason or None)
        for name, value in reply.headers:
            response.headers.add(name, value)
        # The server's answer, whatever its status: a client tells it from the daemon's errors.
        response.headers[RELAYED] = str(int(port))
        if reply.content_length is not None:
            response.content_length = reply.content_length
        await response.prepare(request)
        async for chunk in reply.body:
            await response.write(chunk)
        await response.write_eof()
    return response


def _close_code(payload: bytes) -> int:
    """The code of a close frame, as the caller may be sent it (1000 otherwise)."""
    if len(payload) < 2:
        return 1000
    (code,) = struct.unpack("!H", payload[:2])
    return code if 1000 <= code < 5000 and code not in (1004, 1005, 1006, 1015) else 1000


async def _pipe(ws: web.WebSocketResponse, stream: PortStream, service: PortService) -> None:
    """Messages both ways until either side closes: the caller's close is sent on to the
    server (whose answer gets a short grace), the server's close ends the caller's socket."""
    writer = stream.writer

    async def send(opcode: int, data: bytes) -> None:
        writer.write(websocket.frame(opcode, data))
        await writer.drain()

    async def to_server() -> None:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                data = msg.data.encode()
                await send(websocket.TEXT, data)
            elif msg.type == WSMsgType.BINARY:
                data = msg.data
                await send(websocket.BINARY, data)
            else:
                continue
            service.counted("request", len(data))
        with contextlib.suppress(ConnectionError):
            await send(websocket.CLOSE, struct.pack("!H", ws.close_code or 1000))

    async def to_client() -> None:
        reader = websocket.MessageReader(stream.reader)
        while True:
            try:
                msg = await reader.next()
                if msg.opcode == websocket.TEXT:
                    await ws.send_str(msg.data.decode("utf-8"))
                elif msg.opcode == websocket.BINARY:
                    await ws.send_bytes(msg.data)
                elif msg.opcode == websocket.PING:
                    await send(websocket.PONG, msg.data)
                elif msg.opcode == websocket.CLOSE:
                    with contextlib.suppress(ConnectionError):
                        await send(websocket.CLOSE, msg.data[:2])
                    await ws.close(code=_close_code(msg.data), message=msg.data[2:125])
                    return
            except (asyncio.IncompleteReadError, ConnectionError):
                await ws.close(code=1011, message=b"the server in the container went away")
                return
            except (websocket.WebSocketError, UnicodeDecodeError):
                await ws.close(code=1002, message=b"the server in the container broke the protocol")
                return
            service.counted("response", len(msg.data))

    async with asyncio.TaskGroup() as tg:
        server_side = tg.create_task(to_client())
        caller_side = tg.create_task(to_server())
        await asyncio.wait((server_side, caller_side), return_when=asyncio.FIRST_COMPLETED)
        if caller_side.done() and not server_side.done():
            # The caller closed: the server's own close is awaited a moment, no longer.
            done, _ = await asyncio.wait((server_side,), timeout=CLOSE_GRACE_S)
            if not done:
                server_side.cancel()
