"""The client end of RFC 6455 over a relayed stream (daemon/ports.py): a WebSocket upgrade to
a server inside a container is relayed message by message. The daemon answers the caller's
handshake itself (aiohttp's WebSocketResponse) and makes its own to the server, with a key of
its own; no extension is negotiated (frames are never compressed). Messages are bounded
(MAX_MESSAGE); a ping from the server is answered here, one from the caller by aiohttp.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
from dataclasses import dataclass

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE = 4 << 20  # aiohttp's own default for the caller's side
TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 1, 2, 8, 9, 10, 0


class WebSocketError(Exception):
    """The server broke the protocol (or a bound)."""


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


@dataclass(frozen=True)
class Message:
    opcode: int  # TEXT, BINARY, CLOSE, PING or PONG
    data: bytes


class MessageReader:
    """The server's messages, fragments joined (a control frame may come between them)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._parts: list[bytes] = []
        self._size = 0
        self._first = 0  # the opcode of the message being joined

    async def next(self) -> Message:
        """IncompleteReadError at the server's close."""
        reader = self._reader
        while True:
            b0, b1 = await reader.readexactly(2)
            fin, opcode, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            if b0 & 0x70 or b1 & 0x80:
                raise WebSocketError("the server sent reserved bits or a masked frame")
            if n == 126:
                (n,) = struct.unpack("!H", await reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await reader.readexactly(8))
            if opcode >= CLOSE:
                if not fin or n > 125 or opcode > PONG:
                    raise WebSocketError("the server sent a malformed control frame")
                return Message(opcode, await reader.readexactly(n))
            if opcode not in (CONTINUATION, TEXT, BINARY):
                raise WebSocketError("the server sent an unknown opcode")
            if (opcode == CONTINUATION) != bool(self._first):
                raise WebSocketError("the server sent a fragment out of order")
            self._size += n
            if self._size > MAX_MESSAGE:
                raise WebSocketError(f"the server sent a message over {MAX_MESSAGE} bytes")
            self._first = self._first or opcode
            self._parts.append(await reader.readexactly(n))
            if fin:
                message = Message(self._first, b"".join(self._parts))
                self._parts, self._size, self._first = [], 0, 0
                return message
