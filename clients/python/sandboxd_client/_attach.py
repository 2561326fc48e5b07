"""An attachment to a process (`GET …/processes/{pid}/attach`, a WebSocket) without I/O: the
handshake to send, the reply to check (a refusal before the upgrade is the daemon's usual
error), then received bytes in, output bytes and typed control events out, and the frames
to send for input, resize, signal, EOF and close. The blocking `Attachment` (attach.py) and
the asyncio `AsyncAttachment` (aio.py) only move bytes; the port forwarder (forward.py)
opens its raw connections with the same `Endpoint`.
"""

from __future__ import annotations

import errno
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any, Union

from sandboxd_client import websocket as ws
from sandboxd_client._core import MAX_ERROR_BODY, USER_AGENT, base_url
from sandboxd_client.discovery import Target
from sandboxd_client.errors import (
    ConnectionFailed,
    ProtocolError,
    SandboxdError,
    SocketPermissionDenied,
    Timeout,
    api_error,
)
from sandboxd_client.models import (
    Attached,
    AttachEvent,
    AttachExit,
    WriterChanged,
    attach_event,
)

MAX_INPUT_FRAME = 32 << 10  # well under the daemon's [processes] max_frame_bytes (64 KiB)
MAX_MESSAGE = 4 << 20  # one output frame or control message from the daemon
CHUNK = 64 << 10
CLOSE_WAIT_S = 2.0  # for the daemon's answer to our close
UPGRADE_TIMEOUT_S = 30.0  # for the daemon's answer to the handshake
NORMAL = 1000

AttachItem = Union[bytes, AttachEvent]  # output bytes, or a control event


@dataclass(frozen=True)
class Endpoint:
    """Where a raw connection to the daemon goes: a unix socket, or a host and port (with
    TLS for https), plus the URL's path prefix and the Host and Authorization to send."""

    socket: str
    host: str
    port: int
    tls: bool
    prefix: str
    authority: str
    api_key: str

    @classmethod
    def of(cls, target: Target) -> Endpoint:
        if not target.url:
            return cls(target.socket, "", 0, False, "", "localhost", "")
        url = urllib.parse.urlsplit(base_url(target))  # checked as the HTTP client's is
        tls = url.scheme == "https"
        port = url.port or (443 if tls else 80)
        host = url.hostname or ""  # base_url refuses a URL without one
        return cls("", host, port, tls, url.path.rstrip("/"), url.netloc, target.api_key)

    def authorization(self) -> list[tuple[str, str]]:
        return [("Authorization", f"Bearer {self.api_key}")] if self.api_key else []

    def headers(self) -> list[tuple[str, str]]:
        """What every raw request of ours carries besides its own headers."""
        return [("User-Agent", USER_AGENT), *self.authorization()]


def connect_error(exc: OSError, target: Target) -> SandboxdError:
    """Our exception for a failed raw connection (as _core.translate words httpx's)."""
    where = target.describe()
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
        return SocketPermissionDenied(f"permission denied on {where} (are you in its group?)")
    if isinstance(exc, TimeoutError):
        return Timeout(f"timed out talking to sandboxd at {where}")
    detail = exc.strerror or str(exc) or "no answer"
    return ConnectionFailed(f"cannot reach {where} ({detail}): is sandboxd running?")


def attach_path(path: str, offset: int | None, mode: str) -> str:
    if mode not in ("rw", "ro"):
        raise ValueError("mode must be 'rw' or 'ro'")
    query: dict[str, str | int] = {"mode": mode}
    if offset is not None:
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError("offset must be a non-negative integer")
        query["offset"] = offset
    return f"{path}?{urllib.parse.urlencode(query)}"


class Refusal:
    """A reply other than 101: its head, then its body up to its length (or the close)."""

    def __init__(self, head: ws.Head, body: bytes) -> None:
        self.head = head
        self.body = bytearray(body)
        length = head.get("content-length")
        self.length = int(length) if length and length.isdigit() else None

    def feed(self, data: bytes) -> bool:
        """True once the whole body is here (or as much of it as we keep)."""
        self.body += data
        cap = MAX_ERROR_BODY if self.length is None else min(self.length, MAX_ERROR_BODY)
        return len(self.body) >= cap

    def error(self) -> SandboxdError:
        status = self.head.first[1]
        raw = bytes(self.body[:MAX_ERROR_BODY])
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        code = int(status) if status.isdigit() else 0
        if code < 400:
            return ProtocolError(f"the daemon answered an attach with HTTP {status}")
        return api_error(code, body, self.head.get("x-request-id"), raw)


class Session:
    """One attachment's protocol state. Feed `handshake` the reply's bytes until it returns
    the bytes after the upgrade, then `receive` everything after; send what `take` returns
    after each (pongs, the answer to a close)."""

    def __init__(self, endpoint: Endpoint, path: str) -> None:
        self.key = ws.new_key()
        headers = [*ws.handshake_headers(endpoint.authority, self.key), *endpoint.headers()]
        self.request = ws.request_head("GET", endpoint.prefix + path, headers)
        self._head = bytearray()
        self._refusal: Refusal | None = None
        self._decoder = ws.Decoder(MAX_MESSAGE)
        self._out = bytearray()
        self.closing = False  # we sent a close
        self.closed = False  # the daemon's close arrived
        self.close_code: int | None = None
        self.writer = False  # as the daemon last said (Attached, WriterChanged)
        self.exit: AttachExit | None = None

    # ------------------------------------------------------------ before the upgrade

    def handshake(self, data: bytes) -> bytes | None:
        """The bytes that followed a 101 (which may be none); None: the reply goes on.
        Raises the daemon's error once a refusal has arrived whole."""
        if self._refusal is not None:
            if self._refusal.feed(data):
                raise self._refusal.error()
            return None
        self._head += data
        end = ws.split_head(self._head)
        if end is None:
            return None
        head = ws.parse_head(bytes(self._head[:end]))
        rest = bytes(self._head[end:])
        if head.first[1] != "101":
            self._refusal = Refusal(head, b"")
            if self._refusal.feed(rest):
                raise self._refusal.error()
            return None
        ws.check_accept(head, self.key)
        return rest

    def handshake_ended(self) -> SandboxdError:
        """The connection closed before the reply was whole."""
        if self._refusal is not None:
            return self._refusal.error()
        return ConnectionFailed("the daemon closed the connection before the attach upgrade")

    # ------------------------------------------------------------ after it

    def receive(self, data: bytes) -> list[AttachItem]:
        items: list[AttachItem] = []
        for message in self._decoder.feed(data):
            if message.opcode == ws.BINARY:
                items.append(message.data)
            elif message.opcode == ws.TEXT:
                event = attach_event(_control(message.data))
                if isinstance(event, Attached | WriterChanged):
                    self.writer = event.writer
                elif isinstance(event, AttachExit):
                    self.exit = event
                if event is not None:
                    items.append(event)
            elif message.opcode == ws.PING:
                self._out += ws.frame(ws.PONG, message.data)
            elif message.opcode == ws.CLOSE:
                self.closed = True
                self.close_code = ws.close_code(message.data)
                if not self.closing:
                    self.closing = True
                    self._out += ws.frame(ws.CLOSE, message.data[:2])
        return items

    def take(self) -> bytes:
        """What to send now (pongs, the answer to the daemon's close)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def input(self, data: bytes) -> bytes:
        """Binary frames for the process's input, split at the daemon's frame cap."""
        self._writable()
        view = memoryview(data)
        return b"".join(
            ws.frame(ws.BINARY, bytes(view[i : i + MAX_INPUT_FRAME]))
            for i in range(0, len(data), MAX_INPUT_FRAME)
        )

    def control(self, message: dict[str, Any]) -> bytes:
        self._writable()
        return ws.frame(ws.TEXT, json.dumps(message).encode())

    def resize(self, cols: int, rows: int) -> bytes:
        return self.control({"type": "resize", "cols": cols, "rows": rows})

    def signal(self, name: str) -> bytes:
        return self.control({"type": "signal", "signal": name})

    def eof(self) -> bytes:
        return self.control({"type": "eof"})

    def close(self, code: int = NORMAL) -> bytes:
        """Our close frame (empty if one was sent, or the daemon closed first)."""
        if self.closing:
            return b""
        self.closing = True
        return ws.frame(ws.CLOSE, ws.close_payload(code))

    def _writable(self) -> None:
        if self.closing or self.closed:
            raise ConnectionFailed("the attachment is closed")


def _control(data: bytes) -> dict[str, Any]:
    try:
        message = json.loads(data)
    except ValueError:
        raise ProtocolError("the daemon sent a control message that is not JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError("the daemon sent a control message that is not an object")
    return message
