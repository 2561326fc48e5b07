"""Ports (/v1/containers/{id}/ports/{port}/{path}): an HTTP request relayed to a server that
listens on 127.0.0.1:{port} inside the container.

The sandbox has no network interface and nothing listens on a host TCP port: the agent
connects to its own loopback and the agent connection then carries the TCP stream's bytes
(sandbox/agent/ports.py). The daemon speaks HTTP/1.1 over that stream, one request per
connection (`Connection: close`): the request line and its filtered headers, the body as it
arrives from the client (with its length, or re-chunked), then the response's status and
headers, read within a bound (504 beyond), and its body streamed back as it comes, by its
length, its chunks or until the server closes. Neither body is ever held whole. A WebSocket
handshake is made to the server with the daemon's own key; on its 101 the API side relays
messages over the same stream (daemon/api/ports.py, daemon/websocket.py).

Every relay holds the container active and one of its agent connections; at most
`ports.max_relays` are open per container (429 beyond: a slot frees as soon as one ends,
like the agent's own busy answer, so a retry shortly after succeeds, unlike the 409 caps
that wait for the caller to delete something).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass

from sandboxd_client.websocket import HOP_BY_HOP

from daemon import websocket
from daemon.config import Config
from daemon.containers import Caller, ContainerService
from daemon.errors import InvalidRequest, PortTimeout, PortUnreachable, TooManyRelays
from daemon.metrics import Metrics
from daemon.sandboxes import Sandboxes
from sandbox.agent_client import PortStream

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
# Hop-by-hop headers and what this relay frames itself; Authorization is the caller's key
# for this API and never reaches the sandbox; Expect: the daemon already answered the
# client's 100-continue, the server would only send a second one.
REQUEST_DROPPED = HOP_BY_HOP | frozenset(
    {
        "host",
        "content-length",
        "authorization",
        "expect",
    }
)
# The daemon's own: the request id of this call, and the mark of a relayed response.
RELAYED = "x-sandboxd-port"
RESPONSE_DROPPED = HOP_BY_HOP | frozenset({"x-request-id", RELAYED, "content-length"})
# The daemon makes its own handshake with the server (daemon/websocket.py).
WEBSOCKET_OWN = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-accept",
    }
)
CHUNK = 64 << 10
MAX_CHUNK_LINE = 4096  # a chunk-size line, or one trailer line
MAX_TRAILER_LINES = 100
TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


@dataclass(frozen=True)
class RelayRequest:
    method: str
    target: str  # the path inside, "/..." with the query string
    headers: Sequence[tuple[str, str]]  # as the client sent them (filtered here)
    content_length: int | None  # None with `chunked`, or without a body
    chunked: bool
    body: AsyncIterator[bytes]
    websocket: bool = False  # a WebSocket handshake the caller's side has checked


@dataclass(frozen=True)
class RelayResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]  # hop-by-hop ones removed
    content_length: int | None  # as the server stated it (None: chunked or until close)
    body: AsyncIterator[bytes]
    # After a 101 to a WebSocket handshake: the stream the server's frames come on.
    websocket: PortStream | None = None


def check_port(text: str) -> int:
    """The {port} of a route: a decimal 1..65535 (400 otherwise)."""
    if not text.isascii() or not text.isdigit() or len(text) > 5 or not 1 <= int(text) <= 65535:
        raise InvalidRequest("port must be an integer within 1..65535.", param="port")
    return int(text)


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    """The header names a Connection header lists: hop-by-hop for this hop only."""
    return {
        token.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
    }


def wants_websocket(method: str, headers: Iterable[tuple[str, str]]) -> bool:
    """A WebSocket handshake: GET with Upgrade: websocket and Connection: upgrade."""
    pairs = list(headers)
    upgrade = {
        token.strip().lower()
        for name, value in pairs
        if name.lower() == "upgrade"
        for token in value.split(",")
    }
    return method == "GET" and "websocket" in upgrade and "upgrade" in _connection_tokens(pairs)


def request_head(port: int, req: RelayRequest, ws_key: str | None = None) -> bytes:
    """The request line and headers for the server; with `ws_key`, the daemon's own WebSocket
    handshake (its key, version 13, no extension; the caller's subprotocols kept)."""
    listed = _connection_tokens(req.headers)
    lines = [f"{req.method} {req.target} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    for name, value in req.headers:
        low = name.lower()
        if low in REQUEST_DROPPED or low in listed:
            continue
        if ws_key is not None and low in WEBSOCKET_OWN:
            continue
        lines.append(f"{name}: {value}")
    if ws_key is not None:
        lines += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {ws_key}"]
        lines.append("Sec-WebSocket-Version: 13")
    else:
        if req.chunked:
            lines.append("Transfer-Encoding: chunked")
        elif req.content_length is not None:
            lines.append(f"Content-Length: {req.content_length}")
        lines.append("Connection: close")
    # aiohttp's parser refused CR/LF in them and decoded their bytes as UTF-8 with
    # surrogateescape: encoding them back so sends the server the bytes the client sent.
    try:
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise InvalidRequest("The request's headers cannot be relayed as sent.") from None


@dataclass(frozen=True)
class Head:
    status: int
    reason: str
    headers: list[tuple[str, str]]


def parse_head(raw: bytes) -> Head:
    """An HTTP/1.x status line and headers (PortUnreachable when it is not one)."""
    text = raw.decode("latin-1")
    lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
    match = re.fullmatch(r"HTTP/1\.[01] ([0-9]{3})(?: (.*))?", lines[0])
    if match is None:
        raise PortUnreachable("The server in the container did not answer in HTTP/1.x.")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not TOKEN.match(name):
            raise PortUnreachable("The server in the container sent a malformed header.")
        headers.append((name, value.strip(" \t")))
    return Head(int(match.group(1)), match.group(2) or "", headers)


class PortService:
    def __init__(
        self,
        config: Config,
        containers: ContainerService,
        sandboxes: Sandboxes,
        metrics: Metrics,
        stopping: asyncio.Event,
    ) -> None:
        self._cfg = config.ports
        self.stopping = stopping  # set at shutdown: relayed WebSockets close (1001) at once
        self._containers = containers
        self._sandboxes = sandboxes
        self._metrics = metrics
        self._open: collections.Counter[str] = collections.Counter()
        metrics.port_relays_open.set_function(self.open_count)

    def open_count(self) -> int:
        return sum(self._open.values())

    @contextlib.asynccontextmanager
    async def relay(
        self, caller: Caller, cid: str, port_text: str, req: RelayRequest
    ) -> AsyncIterator[RelayResponse]:
        """Send `req` to the port and yield the response; its body streams from the block
        (the relay, its agent connection and the container's activity last as long)."""
        await self._containers.running(caller, cid)
        port = check_port(port_text)
        cap = self._cfg.max_relays
        if self._open[cid] >= cap:
            raise TooManyRelays(
                f"The container already relays {cap} requests to its ports (the cap); "
                "retry when one has ended.",
                param="port",
            )
        self._open[cid] += 1
        self._metrics.port_relays.inc()
        try:
            # No await between the check and active(): the reaper cannot slip in between.
            async with (
                self._containers.active(cid),
                self._sandboxes.agent(cid, "port relay") as agent,
                agent.port(port, self._cfg.connect_timeout_ms) as stream,
            ):
                ws_key = websocket.new_key() if req.websocket else None
                await self._send(stream, request_head(port, req, ws_key), req)
                yield await self._response(stream, req.method, ws_key)
        finally:
            self._open[cid] -= 1
            if not self._open[cid]:
                del self._open[cid]

    async def _write(self, stream: PortStream, data: bytes) -> None:
        stream.writer.write(data)
        try:
            async with asyncio.timeout(self._cfg.idle_timeout_s):
                await stream.writer.drain()
        except TimeoutError as exc:
            raise PortTimeout("The server in the container stopped reading the request.") from exc
        except ConnectionError as exc:
            raise PortUnreachable("The server in the container closed the connection.") from exc

    async def _send(self, stream: PortStream, head: bytes, req: RelayRequest) -> None:
        """The head, then the body as the client sends it (re-chunked if it came chunked).
        The whole request goes before the response is read: a server that answers early and
        stops reading is bounded by the idle timeout."""
        await self._write(stream, head)
        if req.websocket:
            return  # a handshake has no body; the connection is the server's frames after it
        sent = 0
        async for chunk in req.body:
            if not chunk:
                continue
            sent += len(chunk)
            data = b"%x\r\n%s\r\n" % (len(chunk), chunk) if req.chunked else chunk
            await self._write(stream, data)
        if req.chunked:
            await self._write(stream, b"0\r\n\r\n")
        self._metrics.port_relay_bytes.labels("request").inc(sent)

    def counted(self, direction: str, n: int) -> None:
        """Bytes relayed (a WebSocket's messages, which the API side pumps)."""
        self._metrics.port_relay_bytes.labels(direction).inc(n)

    async def _response(
        self, stream: PortStream, method: str, ws_key: str | None = None
    ) -> RelayResponse:
        reader = stream.reader
        limit = self._cfg.max_header_bytes
        try:
            async with asyncio.timeout(self._cfg.response_timeout_s):
                while True:
                    raw = await reader.readuntil(b"\r\n\r\n")
                    if len(raw) > limit:
                        raise PortUnreachable(
                            f"The server's response headers exceed {limit} bytes."
                        )
                    head = parse_head(raw)
                    # Interim answers (100 Continue, 103 Early Hints): the final one follows.
                    if not 100 <= head.status < 200 or head.status == 101:
                        break
        except TimeoutError as exc:
            raise PortTimeout(
                f"The server in the container did not answer within "
                f"{self._cfg.response_timeout_s:g} s."
            ) from exc
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise PortUnreachable(
                "The server in the container closed the connection without a response."
            ) from exc
        except asyncio.LimitOverrunError as exc:
            raise PortUnreachable(f"The server's response headers exceed {limit} bytes.") from exc
        listed = _connection_tokens(head.headers)
        if head.status == 101:
            return self._upgraded(stream, head, ws_key)
        codings = [
            v.strip().lower()
            for n, value in head.headers
            if n.lower() == "transfer-encoding"
            for v in value.split(",")
        ]
        lengths = {v for n, v in head.headers if n.lower() == "content-length"}
        headers = [
            (n, v)
            for n, v in head.headers
            if n.lower() not in RESPONSE_DROPPED and n.lower() not in listed
        ]
        length: int | None = None
        if method == "HEAD" or head.status in (204, 304):
            body = self._empty()
            # A HEAD's length describes the GET's body: keep it for the client.
            if method == "HEAD" and len(lengths) == 1 and next(iter(lengths)).isdigit():
                headers.append(("Content-Length", next(iter(lengths))))
        elif codings:
            # Chunked last frames the body; any other coding runs to the server's close.
            chunked = codings[-1] == "chunked"
            body = self._chunked(reader) if chunked else self._until_close(reader)
        elif lengths:
            value = next(iter(lengths))
            if len(lengths) != 1 or not value.isascii() or not value.isdigit():
                raise PortUnreachable("The server in the container sent a bad Content-Length.")
            length = int(value)
            body = self._sized(reader, length)
        else:
            body = self._until_close(reader)
        return RelayResponse(head.status, head.reason, headers, length, body)

    def _upgraded(self, stream: PortStream, head: Head, ws_key: str | None) -> RelayResponse:
        """A 101: only to the daemon's own WebSocket handshake, with the right accept."""
        accept = {v for n, v in head.headers if n.lower() == "sec-websocket-accept"}
        if ws_key is None or accept != {websocket.accept_for(ws_key)}:
            raise PortUnreachable("The server in the container switched protocols: not relayed.")
        chosen = [(n, v) for n, v in head.headers if n.lower() == "sec-websocket-protocol"]
        return RelayResponse(101, head.reason, chosen, None, self._empty(), stream)

    async def _empty(self) -> AsyncIterator[bytes]:
        return
        yield  # an async generator with nothing in it

    async def _read(self, reader: asyncio.StreamReader, n: int) -> bytes:
        """Up to `n` bytes, within the idle bound (b"" at the server's close)."""
        try:
            async with asyncio.timeout(self._cfg.idle_timeout_s):
                data = await reader.read(n)
        except TimeoutError as exc:
            raise PortTimeout(
                f"The server in the container sent nothing for {self._cfg.idle_timeout_s:g} s."
            ) from exc
        except ConnectionError as exc:
            raise PortUnreachable("The server in the container reset the connection.") from exc
        self._metrics.port_relay_bytes.labels("response").inc(len(data))
        return data

    async def _line(self, reader: asyncio.StreamReader) -> bytes:
        try:
            async with asyncio.timeout(self._cfg.idle_timeout_s):
                line = await reader.readuntil(b"\n")
        except TimeoutError as exc:
            raise PortTimeout("The server in the container stopped sending.") from exc
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
            raise PortUnreachable("The server in the container cut its chunked body.") from exc
        if len(line) > MAX_CHUNK_LINE:
            raise PortUnreachable("The server in the container sent a malformed chunk.")
        return line.rstrip(b"\r\n")

    async def _until_close(self, reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
        while data := await self._read(reader, CHUNK):
            yield data

    async def _sized(self, reader: asyncio.StreamReader, length: int) -> AsyncIterator[bytes]:
        left = length
        while left:
            data = await self._read(reader, min(CHUNK, left))
            if not data:
                raise PortUnreachable("The server in the container cut its response short.")
            left -= len(data)
            yield data

    async def _chunked(self, reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
        """The chunks' data (the client gets it chunked again by the daemon's server)."""
        while True:
            size_text = (await self._line(reader)).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise PortUnreachable(
                    "The server in the container sent a malformed chunk."
                ) from None
            if size < 0:
                raise PortUnreachable("The server in the container sent a malformed chunk.")
            if size == 0:
                for _ in range(MAX_TRAILER_LINES):
                    if not await self._line(reader):
                        return
                raise PortUnreachable("The server in the container sent too many trailers.")
            async for data in self._sized(reader, size):
                yield data
            if await self._line(reader):
                raise PortUnreachable("The server in the container sent a malformed chunk.")
