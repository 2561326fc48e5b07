"""RFC 6455, the client's end, without I/O: the handshake's request and its check, frames
to send (masked, as a client's must be) and a decoder that turns received bytes into
messages. The blocking and the asyncio attachment (attach.py) and the daemon's relay to a
server inside a container (daemon/websocket.py) all frame with this; each only moves the
bytes its own way. No extension is ever offered, so frames are never compressed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from sandboxd_client.errors import ProtocolError

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0, 1, 2, 8, 9, 10
# Hop-by-hop headers (RFC 9110 7.6.1): never relayed, by the daemon's ports route or by
# `sandboxd port-forward` (each adds what it frames itself).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
MAX_HEAD = 64 << 10  # an HTTP response head (before the upgrade, or a refusal's)


class WebSocketError(ProtocolError):
    """The peer broke the protocol (or a bound)."""


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()  # noqa: S324


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked frame (a client's frames are masked, RFC 6455 5.3)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    mask = os.urandom(4)
    return head + mask + _mask(payload, mask)


def _mask(payload: bytes, mask: bytes) -> bytes:
    """XOR with the repeated mask, as one big-integer operation (fast for large payloads)."""
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def close_payload(code: int) -> bytes:
    return struct.pack("!H", code)


def close_code(payload: bytes) -> int | None:
    """The status code a close frame carries (None: it carries none)."""
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


@dataclass(frozen=True)
class Message:
    opcode: int  # TEXT, BINARY, CLOSE, PING or PONG
    data: bytes


class Decoder:
    """Messages from the bytes a server sends, as they arrive: fragments joined (a control
    frame may come between them), each message at most `max_message` bytes."""

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self._buffer = bytearray()
        self._parts: list[bytes] = []
        self._size = 0
        self._first = 0  # the opcode of the message being joined

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        messages: list[Message] = []
        while (message := self._next()) is not None:
            messages.append(message)
        return messages

    def _next(self) -> Message | None:
        while True:
            buf = self._buffer
            if len(buf) < 2:
                return None
            b0, b1 = buf[0], buf[1]
            fin, opcode, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            if b0 & 0x70 or b1 & 0x80:
                raise WebSocketError("the server sent reserved bits or a masked frame")
            start = 2
            if n == 126:
                if len(buf) < 4:
                    return None
                (n,) = struct.unpack_from("!H", buf, 2)
                start = 4
            elif n == 127:
                if len(buf) < 10:
                    return None
                (n,) = struct.unpack_from("!Q", buf, 2)
                start = 10
            if opcode >= CLOSE:
                if not fin or n > 125 or opcode > PONG:
                    raise WebSocketError("the server sent a malformed control frame")
            elif opcode not in (CONTINUATION, TEXT, BINARY):
                raise WebSocketError("the server sent an unknown opcode")
            elif (opcode == CONTINUATION) != bool(self._first):
                raise WebSocketError("the server sent a fragment out of order")
            elif self._size + n > self.max_message:
                raise WebSocketError(f"the server sent a message over {self.max_message} bytes")
            if len(buf) < start + n:
                return None
            payload = bytes(buf[start : start + n])
            del buf[: start + n]
            if opcode >= CLOSE:
                return Message(opcode, payload)
            self._first = self._first or opcode
            self._parts.append(payload)
            self._size += n
            if fin:
                message = Message(self._first, b"".join(self._parts))
                self._parts, self._size, self._first = [], 0, 0
                return message


# ---------------------------------------------------------------- the HTTP around it


def request_head(
    method: str, target: str, headers: Iterable[tuple[str, str]], version: str = "HTTP/1.1"
) -> bytes:
    lines = [f"{method} {target} {version}", *(f"{k}: {v}" for k, v in headers)]
    for line in lines:
        if "\r" in line or "\n" in line:
            raise ValueError("a header may not hold a line break")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def handshake_headers(host: str, key: str) -> list[tuple[str, str]]:
    return [
        ("Host", host),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
    ]


def split_head(buffer: bytes | bytearray) -> int | None:
    """Where an HTTP head ends in `buffer` (just after its blank line); None: not yet."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise ProtocolError(f"an HTTP head over {MAX_HEAD} bytes")
        return None
    return end + 4


@dataclass(frozen=True)
class Head:
    """A parsed HTTP/1.x request or response head (`first`: its first line's three parts)."""

    first: tuple[str, str, str]
    headers: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def tokens(self, name: str) -> set[str]:
        """The comma-separated tokens of every `name` header, lowercased."""
        name = name.lower()
        return {
            t.strip().lower() for k, v in self.headers if k.lower() == name for t in v.split(",")
        } - {""}


def parse_head(raw: bytes) -> Head:
    """A head up to its blank line; ProtocolError for anything that is not HTTP/1.x."""
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) == 2:
        parts.append("")  # a status line without a reason
    if len(parts) != 3:
        raise ProtocolError(f"not an HTTP/1.x head: {lines[0][:80]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ProtocolError(f"a malformed header line: {line[:80]!r}")
        headers.append((name, value.strip()))
    return Head((parts[0], parts[1], parts[2]), headers)


def check_accept(head: Head, key: str) -> None:
    """A 101 that really switched to this WebSocket (ProtocolError otherwise)."""
    if "websocket" not in head.tokens("upgrade") or head.get("sec-websocket-accept") != accept_for(
        key
    ):
        raise ProtocolError("the daemon's 101 reply is not a WebSocket handshake for our key")
