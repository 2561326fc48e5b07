"""The client end of RFC 6455 over a relayed stream (daemon/ports.py): a WebSocket upgrade to
a server inside a container is relayed message by message. The daemon answers the caller's
handshake itself (aiohttp's WebSocketResponse) and makes its own to the server, with a key of
its own; no extension is negotiated (frames are never compressed). Messages are bounded
(MAX_MESSAGE); a ping from the server is answered here, one from the caller by aiohttp.

The framing is the client package's (sandboxd_client.websocket, without I/O): the same code
frames the CLI's attachments; this module only reads it off the relayed stream.
"""

from __future__ import annotations

import asyncio
import collections

from sandboxd_client.websocket import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    Decoder,
    Message,
    WebSocketError,
    accept_for,
    frame,
    new_key,
)

MAX_MESSAGE = 4 << 20  # aiohttp's own default for the caller's side
CHUNK = 64 << 10

__all__ = [
    "BINARY", "CLOSE", "CONTINUATION", "MAX_MESSAGE", "PING", "PONG", "TEXT", "Message",
    "MessageReader", "WebSocketError", "accept_for", "frame", "new_key",
]  # fmt: skip


class MessageReader:
    """The server's messages, fragments joined (a control frame may come between them)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._decoder = Decoder(MAX_MESSAGE)
        self._ready: collections.deque[Message] = collections.deque()

    async def next(self) -> Message:
        """IncompleteReadError at the server's close."""
        while not self._ready:
            data = await self._reader.read(CHUNK)
            if not data:
                raise asyncio.IncompleteReadError(b"", None)
            self._ready.extend(self._decoder.feed(data))
        return self._ready.popleft()
