"""A local HTTP listener for a server inside a container (`sandboxd port-forward`): each
request that arrives on it is sent through the ports route (`…/ports/{port}/{path}`), both
bodies streamed, and the server's response written back; connections are kept alive; a
WebSocket handshake is passed through on a raw connection to the daemon, whose 101 (it
answers the handshake itself and relays messages to the server) turns that connection into
a byte pipe. Nothing here parses more HTTP than framing needs: heads, lengths and chunks.

with AsyncClient() as sbx:
    async with PortForward(sbx, container_id, 8000) as fwd:
        print(fwd.url)
        await fwd.serve_forever()
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import httpx2

from sandboxd_client import _attach, _core, _routes
from sandboxd_client import websocket as ws
from sandboxd_client.aio import AsyncClient, open_stream
from sandboxd_client.errors import ProtocolError, SandboxdError

CHUNK = 64 << 10
MAX_LINE = 8 << 10  # a chunk-size or trailer line
# Hop-by-hop headers (RFC 9110 7.6.1), those we frame ourselves, and the caller's own
# Authorization: the daemon's key is ours to send, the caller's would replace it.
REQUEST_DROPPED = ws.HOP_BY_HOP | {"host", "authorization", "expect"}
RESPONSE_DROPPED = ws.HOP_BY_HOP | {"content-length"}
# For a WebSocket the handshake's own headers stay: the daemon answers them.
UPGRADE_DROPPED = frozenset({"host", "authorization"})


class BadRequest(Exception):
    """What the local client sent is not HTTP/1.x we can relay (answered 400, then closed)."""


class PortForward:
    """Listens on `host`:`local_port` (0: any free port; see `url`) for `port` in the
    container. `on_error` hears about each request the daemon could not be reached for."""

    def __init__(
        self,
        client: AsyncClient,
        container_id: str,
        port: int,
        *,
        host: str = "127.0.0.1",
        local_port: int = 0,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        _routes.port_path(container_id, port, "/")  # the port's check, before listening
        self._client = client
        self._cid = container_id
        self._port = port
        self._host = host
        self._local_port = local_port
        self._on_error = on_error or (lambda message: None)
        self._endpoint = _attach.Endpoint.of(client.target)
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None, "not started"
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self._host, self._local_port, limit=ws.MAX_HEAD
        )

    async def serve_forever(self) -> None:
        assert self._server is not None, "not started"
        await self._server.serve_forever()

    async def close(self) -> None:
        """Stop listening and end every open connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> PortForward:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ one connection

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while await self._exchange(reader, writer):
                pass
        except BadRequest as exc:
            with contextlib.suppress(ConnectionError):
                await _answer(writer, 400, "Bad Request", f"{exc}\n")
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went, or sent what cannot be framed: its connection ends
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """One request and its response; whether the connection goes on."""
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise BadRequest("the request head was cut off") from None
            return False  # the client closed between requests
        except asyncio.LimitOverrunError:
            raise BadRequest(f"a request head over {ws.MAX_HEAD} bytes") from None
        try:
            head = ws.parse_head(raw)
        except ProtocolError as exc:
            raise BadRequest(str(exc)) from None
        method, target, version = head.first
        if not target.startswith("/") or version not in ("HTTP/1.1", "HTTP/1.0"):
            raise BadRequest("expected an origin-form HTTP/1.x request line")
        route = self._route(target)
        if "websocket" in head.tokens("upgrade"):
            await self._upgrade(head, reader, writer)
            return False
        connection = head.tokens("connection")
        keep = "close" not in connection and (version == "HTTP/1.1" or "keep-alive" in connection)
        body = _Body(head, reader, writer)
        dropped = REQUEST_DROPPED | connection
        headers = [(k, v) for k, v in head.headers if k.lower() not in dropped]
        if body.chunked:
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        http = self._client._http
        request = http.build_request(
            method,
            route,
            headers=headers,
            content=body.chunks() if body.present else None,
            timeout=_core.timeout(None),  # the daemon bounds a silent relay itself
        )
        try:
            response = await http.send(request, stream=True)
        except httpx2.HTTPError as exc:
            error = _core.translate(exc, self._client.target)
            self._on_error(str(error))
            await _answer(writer, 502, "Bad Gateway", f"sandboxd: {error}\n")
            return False
        try:
            keep = await _respond(response, method, version, keep, writer)
        except httpx2.HTTPError as exc:
            self._on_error(str(_core.translate(exc, self._client.target)))
            return False  # the response is cut off: so is the connection
        finally:
            await response.aclose()
        return keep and body.finished

    def _route(self, target: str) -> str:
        """The ports route for the local client's request target (never another route)."""
        try:
            return _routes.port_path(self._cid, self._port, target)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None

    async def _upgrade(
        self, head: ws.Head, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """A WebSocket handshake, sent on a raw connection to the daemon; after its 101 the
        two connections are joined byte for byte (frames are the client's and the daemon's
        to read). A refusal is relayed whole, then the connection closes."""
        method, target, version = head.first
        path = self._endpoint.prefix + self._route(target)
        headers = [(k, v) for k, v in head.headers if k.lower() not in UPGRADE_DROPPED]
        headers = [("Host", self._endpoint.authority), *headers, *self._endpoint.authorization()]
        try:
            up_reader, up_writer = await open_stream(self._client.target, self._endpoint)
        except SandboxdError as exc:
            self._on_error(str(exc))
            await _answer(writer, 502, "Bad Gateway", f"sandboxd: {exc}\n")
            return
        try:
            up_writer.write(ws.request_head(method, path, headers, version))
            await up_writer.drain()
            reply = await up_reader.readuntil(b"\r\n\r\n")
            writer.write(reply)
            await writer.drain()
            answer = ws.parse_head(reply)
            if answer.first[1] == "101":
                await _join(reader, writer, up_reader, up_writer)
            elif "chunked" in answer.tokens("transfer-encoding"):
                async for chunk in _dechunk(up_reader):
                    writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                writer.write(b"0\r\n\r\n")
            else:
                length = answer.get("content-length")
                await _copy(up_reader, writer, int(length) if length else None)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ProtocolError) as exc:
            self._on_error(f"the daemon's answer to a WebSocket handshake broke off: {exc}")
        finally:
            up_writer.close()


class _Body:
    """A request's body as it arrives from the local client (by its length or its chunks),
    for httpx to stream on; `finished` once all of it was read (else the connection cannot
    carry another request)."""

    def __init__(
        self, head: ws.Head, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.chunked = "chunked" in head.tokens("transfer-encoding")
        if head.get("transfer-encoding") and not self.chunked:
            raise BadRequest("a transfer coding other than chunked")
        length = head.get("content-length")
        if length is not None and not (length.isascii() and length.isdigit()):
            raise BadRequest("a bad Content-Length")
        self.length = int(length) if length is not None and not self.chunked else 0
        self.present = self.chunked or self.length > 0
        self.finished = not self.present
        self._continue = "100-continue" in head.tokens("expect")
        self._reader = reader
        self._writer = writer

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._continue:  # we read the body at once: say so (the daemon drops Expect)
            self._writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await self._writer.drain()
        if self.chunked:
            async for chunk in _dechunk(self._reader):
                yield chunk
        else:
            left = self.length
            while left:
                chunk = await self._reader.read(min(CHUNK, left))
                if not chunk:
                    raise ConnectionError("the client closed before its body ended")
                left -= len(chunk)
                yield chunk
        self.finished = True


async def _dechunk(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """The payload of a chunked body (trailers read and dropped)."""
    while True:
        line = await _line(reader)
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadRequest("a bad chunk size") from None
        if size == 0:
            while await _line(reader):
                pass
            return
        while size:
            chunk = await reader.read(min(CHUNK, size))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", size)
            size -= len(chunk)
            yield chunk
        if await _line(reader):
            raise BadRequest("a chunk longer than its size")


async def _line(reader: asyncio.StreamReader) -> bytes:
    line = await reader.readuntil(b"\n")
    if len(line) > MAX_LINE:
        raise BadRequest(f"a chunk line over {MAX_LINE} bytes")
    return line.rstrip(b"\r\n")


async def _respond(
    response: httpx2.Response, method: str, version: str, keep: bool, writer: asyncio.StreamWriter
) -> bool:
    """The response written to the local client (the daemon's own errors included, as they
    are); whether the connection may carry another request."""
    status = response.status_code
    reason = response.reason_phrase or "Unknown"
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw]
    length = response.headers.get("content-length")
    bodiless = method == "HEAD" or status in (204, 304) or status < 200
    lines = [f"{k}: {v}" for k, v in headers if k.lower() not in RESPONSE_DROPPED]
    chunked = False
    if length is not None and (bodiless or not response.headers.get("transfer-encoding")):
        lines.append(f"Content-Length: {length}")
    elif not bodiless:
        if version == "HTTP/1.1":
            chunked = True
            lines.append("Transfer-Encoding: chunked")
        else:
            keep = False  # an HTTP/1.0 client reads to the close
    if version == "HTTP/1.0" and keep:
        lines.append("Connection: keep-alive")
    elif not keep:
        lines.append("Connection: close")
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{line}\r\n" for line in lines)
    writer.write(f"{head}\r\n".encode("latin-1"))
    if not bodiless:
        async for chunk in response.aiter_raw():
            if chunk:
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                await writer.drain()
        if chunked:
            writer.write(b"0\r\n\r\n")
    await writer.drain()
    return keep


async def _answer(writer: asyncio.StreamWriter, status: int, reason: str, text: str) -> None:
    body = text.encode()
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int | None) -> None:
    """`n` bytes (None: until the close) from reader to writer."""
    while n is None or n > 0:
        chunk = await reader.read(CHUNK if n is None else min(CHUNK, n))
        if not chunk:
            return
        writer.write(chunk)
        await writer.drain()
        if n is not None:
            n -= len(chunk)


async def _join(
    a_reader: asyncio.StreamReader,
    a_writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader,
    b_writer: asyncio.StreamWriter,
) -> None:
    """Bytes both ways until either side closes (then the other is closed too)."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await _copy(reader, writer, None)

    tasks = [
        asyncio.ensure_future(pipe(a_reader, b_writer)),
        asyncio.ensure_future(pipe(b_reader, a_writer)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
