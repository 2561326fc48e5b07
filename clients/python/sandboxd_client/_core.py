"""What the sync and the async client share: a call's description, the retry rule, the SSE
decoder, streamed multipart bodies and the translation of transport errors. No I/O on the
network here; the two clients each run a Call their own way."""

from __future__ import annotations

import errno
import json
import os
import random
import secrets
import urllib.parse
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Union

import httpx2

from sandboxd_client.discovery import Target
from sandboxd_client.errors import (
    APIError,
    ConnectionFailed,
    ProtocolError,
    SandboxdError,
    ShuttingDown,
    SocketPermissionDenied,
    Timeout,
    api_error,
)
from sandboxd_client.models import OutputEnd, OutputStart, PortResponse, ProcessEvent

CHUNK = 256 << 10
MAX_SSE_EVENT = 32 << 20  # one event carries at most one output slice; this is generous
MAX_ERROR_BODY = 1 << 20
DEFAULT_TIMEOUT_S = 120.0
CONNECT_TIMEOUT_S = 5.0
DEFAULT_MAX_RETRIES = 2
MAX_RETRY_AFTER_S = 60.0  # a longer Retry-After is the caller's decision, not a hidden sleep
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 8.0
RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})  # without an x-should-retry header
USER_AGENT = "sandboxd-client/0.1"

Source = Union[bytes, str, "os.PathLike[str]"]  # runs on 3.10
Destination = Union[str, "os.PathLike[str]", IO[bytes]]
PAGE = 100  # the largest page every list endpoint serves
MAX_RECONNECTS = 5  # a followed output stream, lost this often in a row without output: give up


class _Unset:
    pass


UNSET: Any = _Unset()  # "the client's timeout": None already means "no timeout"


@dataclass(frozen=True)
class Part:
    """One multipart part: a form field (bytes) or a file (bytes or a path, read when sent)."""

    name: str
    source: Source
    filename: str | None = None

    def head(self, boundary: str) -> bytes:
        disposition = f'form-data; name="{self.name}"'
        if self.filename is not None:
            disposition += f"; {_filename_param(self.filename)}"
        kind = "Content-Type: application/octet-stream\r\n" if self.filename is not None else ""
        return f"--{boundary}\r\nContent-Disposition: {disposition}\r\n{kind}\r\n".encode()

    def size(self) -> int:
        if isinstance(self.source, bytes):
            return len(self.source)
        return os.stat(self.source).st_size


@dataclass(frozen=True)
class Multipart:
    """A multipart/form-data body streamed from its parts, with a known length, so a large
    file is never held in memory and each retry reads it afresh."""

    parts: list[Part]
    boundary: str = field(default_factory=lambda: f"sandboxd-{secrets.token_hex(16)}")

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def length(self) -> int:
        fixed = sum(len(p.head(self.boundary)) + p.size() + 2 for p in self.parts)
        return fixed + len(self._tail())

    def _tail(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode()

    def chunks(self) -> Iterator[bytes]:
        for part in self.parts:
            yield part.head(self.boundary)
            if isinstance(part.source, bytes):
                yield part.source
            else:
                with open(part.source, "rb") as f:
                    while chunk := f.read(CHUNK):
                        yield chunk
            yield b"\r\n"
        yield self._tail()

    async def achunks(self) -> AsyncIterator[bytes]:
        import asyncio  # here, not at the top: a blocking client never loads asyncio

        for part in self.parts:
            yield part.head(self.boundary)
            if isinstance(part.source, bytes):
                yield part.source
            else:
                # A disk read is a blocking call: off the caller's event loop.
                f = await asyncio.to_thread(open, part.source, "rb")
                try:
                    while chunk := await asyncio.to_thread(f.read, CHUNK):
                        yield chunk
                finally:
                    await asyncio.to_thread(f.close)
            yield b"\r\n"
        yield self._tail()


@dataclass(frozen=True)
class Call:
    """One API request as data: the clients send it, retry it and parse its reply."""

    method: str
    path: str
    params: Mapping[str, str | int] | None = None
    json: Any = None
    multipart: Multipart | None = None
    # A creating POST the daemon deduplicates (daemon/api/idempotent.py): one key for all
    # of this call's attempts, so a retry after a lost reply cannot create twice.
    idempotent: bool = False
    stream: bool = False  # an SSE reply

    def headers(self, idempotency_key: str | None) -> dict[str, str]:
        headers = {"Accept": "text/event-stream" if self.stream else "application/json"}
        if self.multipart is not None:
            headers["Content-Type"] = self.multipart.content_type
            headers["Content-Length"] = str(self.multipart.length())
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return headers


def new_idempotency_key() -> str:
    return f"sandboxd-client-{secrets.token_hex(16)}"


@dataclass(frozen=True)
class RetryPolicy:
    """Retries follow the daemon's `x-should-retry` (and `Retry-After` for the wait)."""

    max_retries: int = DEFAULT_MAX_RETRIES
    max_retry_after_s: float = MAX_RETRY_AFTER_S

    def delay(self, attempt: int, status: int, headers: Mapping[str, str]) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None: do not retry."""
        if attempt >= self.max_retries:
            return None
        should = headers.get("x-should-retry")
        if should == "false" or (should is None and status not in RETRY_STATUSES):
            return None
        after = _retry_after(headers.get("retry-after"))
        if after is not None:
            return after if after <= self.max_retry_after_s else None
        backoff = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0**attempt)
        # Jitter spreads clients that were refused together; not a secret.
        return backoff * random.uniform(0.75, 1.0)  # noqa: S311


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff
    return max(0.0, seconds)


class Resume:
    """Where a followed process's output stream goes on after a lost connection, and when.

    The offset is the furthest one the events named (never moved back: a reconnect repeats
    nothing it already showed). Reconnects back off; only output resets the count of
    failures in a row, so a daemon that keeps accepting and ending streams (while it shuts
    down) cannot hold a follower in a loop."""

    def __init__(self, offset: int, max_reconnects: int) -> None:
        self.offset = offset
        self.max_reconnects = max_reconnects
        self.failures = 0

    def seen(self, event: ProcessEvent) -> None:
        at = event.offset if isinstance(event, OutputStart) else event.next_offset
        self.offset = max(self.offset, at)
        if not isinstance(event, OutputStart | OutputEnd):
            self.failures = 0

    def retry_in(self, exc: SandboxdError) -> float | None:
        """Seconds to wait before reconnecting after `exc`; None: give up, raise it."""
        lost = isinstance(exc, ConnectionFailed | ProtocolError | ShuttingDown)
        if not lost or isinstance(exc, SocketPermissionDenied):
            return None  # an answer (no such process, ...): reconnecting cannot change it
        if self.failures >= self.max_reconnects:
            return None
        delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0**self.failures)
        self.failures += 1
        return delay


class SseDecoder:
    """Server-sent events from the bytes of a reply, as they arrive: one JSON object per
    `data:` event; comment lines (`: keepalive`) and other fields are skipped."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._data: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        self._buffer += chunk
        events: list[dict[str, Any]] = []
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[: end + 1]
            event = self._line(line)
            if event is not None:
                events.append(event)
        if len(self._buffer) + self._size > MAX_SSE_EVENT:
            raise ProtocolError("the daemon sent an oversized event")
        return events

    def _line(self, line: bytes) -> dict[str, Any] | None:
        if not line:
            if not self._data:
                return None
            raw = b"\n".join(self._data)
            self._data, self._size = [], 0
            return _event(raw)
        if line.startswith(b"data:"):
            self._data.append(line[5:].removeprefix(b" "))
            self._size += len(line)
            if self._size > MAX_SSE_EVENT:
                raise ProtocolError("the daemon sent an oversized event")
        return None  # a comment (keepalive) or a field we do not use


def _event(raw: bytes) -> dict[str, Any]:
    try:
        event = json.loads(raw)
    except ValueError:
        raise ProtocolError("the daemon sent an event that is not JSON") from None
    if not isinstance(event, dict):
        raise ProtocolError("the daemon sent an event that is not an object")
    return event


def _filename_param(name: str) -> str:
    if name.isascii() and name.isprintable() and '"' not in name and "\\" not in name:
        return f'filename="{name}"'
    return f"filename*=UTF-8''{urllib.parse.quote(name, safe='')}"


def base_url(target: Target) -> str:
    """The httpx base URL: the target's URL, or a placeholder host for the unix socket."""
    if not target.url:
        return "http://localhost"
    parsed = urllib.parse.urlsplit(target.url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"bad url {target.url!r}: expected http(s)://HOST:PORT")
    return target.url.rstrip("/")


def default_headers(target: Target) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT}
    if target.api_key:
        headers["Authorization"] = f"Bearer {target.api_key}"
    return headers


def timeout(seconds: float | None) -> httpx2.Timeout:
    """`seconds` for each read and write (None: wait as long as it takes); connecting to a
    daemon that is there takes milliseconds, so that wait stays short."""
    return httpx2.Timeout(seconds, connect=CONNECT_TIMEOUT_S)


def translate(exc: httpx2.HTTPError, target: Target) -> SandboxdError:
    """Our exception for a transport failure (the CLI prints these messages as they are)."""
    where = target.describe()
    cause = _os_error(exc)
    if cause is not None and (
        isinstance(cause, PermissionError) or cause.errno in (errno.EACCES, errno.EPERM)
    ):
        return SocketPermissionDenied(f"permission denied on {where} (are you in its group?)")
    if isinstance(exc, httpx2.TimeoutException):
        return Timeout(f"timed out talking to sandboxd at {where}")
    if isinstance(exc, httpx2.ProtocolError):  # connected, but the reply is cut or garbled
        return ProtocolError(f"the reply from sandboxd at {where} broke off: {exc!r}")
    if isinstance(exc, httpx2.ConnectError):
        detail = (cause.strerror if cause is not None else None) or str(exc) or "no answer"
        return ConnectionFailed(f"cannot reach {where} ({detail}): is sandboxd running?")
    if isinstance(exc, httpx2.TransportError):
        return ConnectionFailed(f"the connection to sandboxd at {where} broke off: {exc}")
    return ProtocolError(f"bad reply from the daemon: {exc!r}")


def _os_error(exc: BaseException) -> OSError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return current
        current = current.__cause__ or current.__context__
    return None


RELAYED_HEADER = "x-sandboxd-port"  # on every response the ports route relayed


def relayed(response: httpx2.Response) -> bool:
    """Is this the server's response inside the container (any status), not the daemon's?"""
    return RELAYED_HEADER in response.headers


def port_response(response: httpx2.Response, content: bytes) -> PortResponse:
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() != RELAYED_HEADER]
    return PortResponse(response.status_code, headers, content)


def error_for(response: httpx2.Response, raw: bytes) -> APIError:
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    return api_error(response.status_code, body, response.headers.get("x-request-id"), raw)


def decode_json(raw: bytes, path: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise ProtocolError(f"the daemon sent a reply that is not JSON ({path})") from None


def stream_error(event: dict[str, Any], request_id: str | None) -> APIError:
    """An SSE `error` event: the error object of the JSON reply it stands in for."""
    return api_error(200, event, request_id)


def upload_name(source: Source, filename: str | None) -> str:
    if filename is not None:
        return filename
    if isinstance(source, bytes):
        raise ValueError("an upload of bytes needs a filename")
    return Path(source).name


def skill_parts(source: Source, filename: str | None = None) -> list[Part]:
    """A skill upload: a zip (bytes or a path) as one `files` part, or a directory's files as
    `files[]` parts named by their paths relative to it."""
    if not isinstance(source, bytes) and Path(source).is_dir():
        root = Path(source)
        files = sorted(p for p in root.rglob("*") if p.is_file())
        return [Part("files[]", p, p.relative_to(root).as_posix()) for p in files]
    default = "skill.zip" if isinstance(source, bytes) else Path(source).name
    return [Part("files", source, filename or default)]
