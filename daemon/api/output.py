"""Command output on the wire: JSON replies written in bounded slices, and SSE event streams.

Output arrives as bytes; the API sends text. Both writers decode each output stream with its
own incremental UTF-8 decoder, so a character split between two chunks arrives whole and an
incomplete one at the very end becomes one U+FFFD (flushed, never dropped). Bytes that are not
UTF-8 become U+FFFD, sent as its three raw UTF-8 bytes (JSON with ensure_ascii=False), never as
a six-byte `\\ufffd` escape. Neither writer encodes more than SLICE bytes of output between two
turns of the event loop, and neither holds an encoded reply whole: megabytes of output go out
slice by slice, as fast as the client reads them, while other requests keep being served.
"""

from __future__ import annotations

import asyncio
import codecs
import json
from collections.abc import Awaitable, Callable, Hashable, Iterator
from typing import Any

from aiohttp import web

from daemon.errors import DomainError, http_error

SLICE = 64 << 10
JSON_TYPE = "application/json; charset=utf-8"


class Captured:
    """One stream's output kept for a JSON reply: the chunks as they came, never copied."""

    __slots__ = ("chunks", "size")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)


EMPTY = Captured()


def _slices(data: bytes) -> Iterator[bytes]:
    if len(data) <= SLICE:
        yield data
        return
    for start in range(0, len(data), SLICE):
        yield data[start : start + SLICE]


def _text_decoder() -> codecs.IncrementalDecoder:
    return codecs.getincrementaldecoder("utf-8")("replace")


def _dumps(value: Any) -> str:
    """Compact JSON, ASCII: strings that are not our decoded output (file paths, messages)
    may hold lone surrogates, which only an escape can carry."""
    return json.dumps(value, separators=(",", ":"))


def _text_json(text: str) -> str:
    """A string of decoded output as JSON content without the quotes, its non-ASCII raw."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


class _JsonWriter:
    """Serialises a reply whose Captured values become JSON strings. Small replies go out
    whole (with a Content-Length); once more than SLICE bytes are pending the reply is
    streamed (chunked), one slice at a time."""

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self._pending = bytearray()
        self._response: web.StreamResponse | None = None

    async def _spill(self) -> None:
        if len(self._pending) < SLICE:
            return
        if self._response is None:
            self._response = web.StreamResponse(headers={"Content-Type": JSON_TYPE})
            await self._response.prepare(self._request)
        await self._response.write(bytes(self._pending))
        self._pending.clear()
        await asyncio.sleep(0)  # the next slice waits for a turn of the loop

    async def value(self, value: Any) -> None:
        if isinstance(value, Captured):
            await self._text(value)
        elif isinstance(value, dict):
            self._pending += b"{"
            for i, (key, item) in enumerate(value.items()):
                self._pending += b"," if i else b""
                self._pending += _dumps(str(key)).encode() + b":"
                await self.value(item)
            self._pending += b"}"
        elif isinstance(value, list):
            self._pending += b"["
            for i, item in enumerate(value):
                self._pending += b"," if i else b""
                await self.value(item)
            self._pending += b"]"
        else:
            self._pending += _dumps(value).encode()
            await self._spill()

    async def _text(self, captured: Captured) -> None:
        decoder = _text_decoder()
        self._pending += b'"'
        for chunk in captured.chunks:
            for piece in _slices(chunk):
                self._pending += _text_json(decoder.decode(piece)).encode()
                await self._spill()
        self._pending += _text_json(decoder.decode(b"", True)).encode() + b'"'

    async def finish(self) -> web.StreamResponse:
        if self._response is None:
            return web.Response(body=bytes(self._pending), headers={"Content-Type": JSON_TYPE})
        await self._response.write(bytes(self._pending))
        await self._response.write_eof()
        return self._response


async def json_reply(request: web.Request, value: Any) -> web.StreamResponse:
    """A 200 JSON reply of `value`, whose Captured values are output to send as strings."""
    writer = _JsonWriter(request)
    await writer.value(value)
    return await writer.finish()


class _Text:
    """One output stream's decoder, the fields of its events, and (for output read at byte
    offsets) where the bytes its decoder still holds begin."""

    __slots__ = ("decoder", "fields", "held_at")

    def __init__(self, fields: dict[str, Any]) -> None:
        self.decoder = _text_decoder()
        self.fields = fields
        self.held_at: int | None = None


class SseReply:
    """A 200 `text/event-stream` reply: one `data: <json>` event per send.

    `output` decodes the bytes of one output stream (named by a key) into events carrying its
    text; `flush` sends what its decoder still holds (an incomplete character at the end of
    a command becomes U+FFFD). A write to a client that went away raises ConnectionResetError:
    let it end the operation whose output it was (the API's middleware then closes quietly).

    Output read at absolute byte offsets (a process's ring: `output(..., at=)`) gives each
    text event a `next_offset`: where a client that reconnects resumes, just past the bytes
    whose text it has and before any byte a decoder still holds, of any stream: a reconnect
    from it loses nothing, and repeats something only when one stream's character was split
    around the other stream's write (that write's text then comes again)."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response
        self.last_write = asyncio.get_running_loop().time()
        self._texts: dict[Hashable, _Text] = {}
        self._position = 0  # just past the last byte given to a decoder (offset mode)

    @classmethod
    async def open(cls, request: web.Request) -> SseReply:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        return cls(response)

    async def send(self, event: dict[str, Any]) -> None:
        await self._write(_dumps(event))

    async def _write(self, data: str) -> None:
        # JSON leaves these line separators raw, and clients that split lines the way
        # str.splitlines does (httpx's iter_lines) would cut the event there.
        data = data.replace("\x85", "\\u0085").replace("\u2028", "\\u2028")
        data = data.replace("\u2029", "\\u2029")
        await self._send(b"data: " + data.encode() + b"\n\n")

    async def _send(self, frame: bytes) -> None:
        self.last_write = asyncio.get_running_loop().time()
        await self.response.write(frame)

    async def keepalive(self, every_s: float) -> None:
        """Until cancelled: a comment line (which clients ignore) whenever nothing else was
        written for `every_s`; each write is one whole frame, never inside an event."""
        loop = asyncio.get_running_loop()
        while True:
            quiet = loop.time() - self.last_write
            if quiet >= every_s:
                try:
                    await self._send(b": keepalive\n\n")
                except ConnectionResetError:
                    return  # the client is gone: the operation's next write says so
                quiet = 0.0
            await asyncio.sleep(every_s - quiet)

    async def output(
        self, key: Hashable, data: bytes, *, at: int | None = None, **fields: Any
    ) -> None:
        """Events {**fields, "data": text} for `data`, at most SLICE bytes of it per event;
        `at`: the absolute offset of `data`'s first byte (see the class docstring)."""
        state = self._texts.setdefault(key, _Text(fields))
        state.fields = fields
        for piece in _slices(data):
            text = state.decoder.decode(piece)
            if at is not None:
                at += len(piece)
                self._position = max(self._position, at)
                held = len(state.decoder.getstate()[0])
                state.held_at = at - held if held else None
            if text:
                await self._text_event(self._with_offset(state.fields, at), text)
                await asyncio.sleep(0)

    def _with_offset(self, fields: dict[str, Any], at: int | None) -> dict[str, Any]:
        if at is None:
            return fields
        held = [s.held_at for s in self._texts.values() if s.held_at is not None]
        return {**fields, "next_offset": min([self._position, *held])}

    async def _text_event(self, fields: dict[str, Any], text: str) -> None:
        head = _dumps({**fields, "data": ""})[:-2]  # ... "data":"
        await self._write(head + _text_json(text) + '"}')

    async def flush(self, key: Hashable) -> None:
        state = self._texts.pop(key, None)
        if state is not None and (tail := state.decoder.decode(b"", True)):
            offsets = state.held_at is not None
            await self._text_event(
                self._with_offset(state.fields, self._position if offsets else None), tail
            )

    async def flush_all(self) -> None:
        for key in list(self._texts):
            await self.flush(key)

    async def close(self) -> web.StreamResponse:
        await self.response.write_eof()
        return self.response


async def sse_response(
    request: web.Request,
    run: Callable[[SseReply], Awaitable[dict[str, Any]]],
    keepalive_s: float,
) -> web.StreamResponse:
    """A 200 event stream: `run` sends its events and returns the final one; a DomainError
    it raises becomes the final `error` event instead (the error object of the JSON reply
    it replaces). What the decoders still hold goes out before the final event either way.
    Check what can be refused (404, 400) before: once this starts, the status is 200."""
    events = await SseReply.open(request)
    # Owned here, like the watchdog of sandbox/execution.py's pump: cancelled and awaited
    # before the final event, so it outlives neither this reply nor a cancelled request.
    keepalive = asyncio.get_running_loop().create_task(events.keepalive(keepalive_s))
    try:
        final = await run(events)
    except DomainError as exc:
        final = {"type": "error", **http_error(exc)[1]}
    finally:
        keepalive.cancel()
        await asyncio.wait({keepalive})  # its frame is out (or was never started)
    await events.flush_all()
    await events.send(final)
    return await events.close()
