"""A small blocking HTTP client for the daemon's API, over its unix socket or TCP.

Standard library only (http.client). Errors come in three kinds, shaped by what the command
line does with them: `Unreachable` (no daemon there: exit 69), `NoPermission` (the socket
refused us: exit 77) and `ApiError` (the daemon answered with an error object: exit 1).
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import secrets
import socket
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

CONNECT_TIMEOUT_S = 5.0
CALL_TIMEOUT_S = 120.0
CHUNK = 256 << 10
MAX_SSE_EVENT = 32 << 20  # one event carries at most one output chunk; this is generous


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class ClientError(Exception):
    """Anything that stops a command before or while talking to the daemon."""


class Unreachable(ClientError):
    """Nothing answers at the socket or URL."""


class NoPermission(ClientError):
    """The socket exists but we may not connect to it."""


class ApiError(ClientError):
    """The daemon answered with an error object."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Target:
    """Where the daemon is: a unix socket path, or a base URL plus an optional bearer key."""

    socket: str = ""
    url: str = ""
    api_key: str = ""

    def describe(self) -> str:
        return f"url {self.url}" if self.url else f"socket {self.socket}"


class UnixConnection(http.client.HTTPConnection):
    """HTTP over the API's unix socket (the CLI's and the benchmarks')."""

    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(CONNECT_TIMEOUT_S)
            sock.connect(self._path)
            sock.settimeout(self.timeout)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Client:
    def __init__(self, target: Target) -> None:
        self.target = target
        parsed = urllib.parse.urlsplit(target.url) if target.url else None
        if parsed is not None and (parsed.scheme not in ("http", "https") or not parsed.hostname):
            raise ClientError(f"bad --url {target.url!r}: expected http(s)://HOST:PORT")
        self._url = parsed
        self._prefix = parsed.path.rstrip("/") if parsed is not None else ""

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        if self._url is None:
            return UnixConnection(self.target.socket, timeout)
        host, port = self._url.hostname or "", self._url.port
        if self._url.scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=timeout)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "sandboxd-cli"}
        if self.target.api_key:
            headers["Authorization"] = f"Bearer {self.target.api_key}"
        return headers | (extra or {})

    def _open(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = CALL_TIMEOUT_S,
        stream: Readable | None = None,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send one request; return the open connection and its response (status < 400)."""
        conn = self._connection(timeout)
        headers = dict(headers or {})
        if body is not None:
            headers["Content-Length"] = str(len(body))
        try:
            conn.putrequest(method, self._prefix + path)
            for key, value in self._headers(headers).items():
                conn.putheader(key, value)
            conn.endheaders(body)
            if stream is not None:
                while chunk := stream.read(CHUNK):
                    conn.send(chunk)
            response = conn.getresponse()
        except OSError as exc:
            conn.close()
            raise self._translate(exc) from None
        except http.client.HTTPException as exc:
            conn.close()
            raise ClientError(f"bad reply from the daemon: {exc!r}") from None
        if response.status >= 400:
            try:
                raise _api_error(response.status, response.read(1 << 20))
            finally:
                conn.close()
        return conn, response

    def _translate(self, exc: OSError) -> ClientError:
        where = self.target.describe()
        if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
            return NoPermission(f"permission denied on {where} (are you in its group?)")
        if isinstance(exc, TimeoutError | socket.timeout):
            return Unreachable(f"timed out talking to sandboxd at {where}")
        return Unreachable(f"cannot reach {where} ({exc.strerror or exc}): is sandboxd running?")

    def call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        """A JSON request; returns the decoded JSON reply."""
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn, response = self._open(method, path, body, headers)
        try:
            raw = response.read()
        except OSError as exc:
            raise self._translate(exc) from None
        finally:
            conn.close()
        try:
            return json.loads(raw)
        except ValueError:
            raise ClientError(f"the daemon sent a reply that is not JSON ({path})") from None

    def get(self, path: str, **query: str | int) -> Any:
        if query:
            path = f"{path}?{urllib.parse.urlencode(query)}"
        return self.call("GET", path)

    def list_all(self, path: str, **query: str | int) -> list[dict[str, Any]]:
        """Every item of a paginated list endpoint, oldest first."""
        items: list[dict[str, Any]] = []
        after = ""
        while True:
            extra: dict[str, str | int] = {"after": after} if after else {}
            page = self.get(path, limit=100, order="asc", **query, **extra)
            items += page.get("data", [])
            if not page.get("has_more") or not page.get("last_id"):
                return items
            after = page["last_id"]

    def events(self, path: str, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST a JSON body and yield the server-sent events of the reply as they arrive."""
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        conn, response = self._open("POST", path, body, headers, timeout=None)
        try:
            data: list[bytes] = []
            size = 0
            while True:
                line = response.readline(MAX_SSE_EVENT + 1)
                if not line:
                    return
                line = line.rstrip(b"\r\n")
                if line.startswith(b"data:"):
                    data.append(line[5:].removeprefix(b" "))
                    size += len(line)
                    if size > MAX_SSE_EVENT:
                        raise ClientError("the daemon sent an oversized event")
                elif not line and data:
                    yield _event(b"\n".join(data))
                    data, size = [], 0
        except OSError as exc:
            raise self._translate(exc) from None
        except http.client.HTTPException as exc:
            raise ClientError(f"the exec stream broke off: {exc!r}") from None
        finally:
            conn.close()

    def upload(self, path: str, filename: str, source: BinaryIO, size: int) -> Any:
        """multipart/form-data with one `file` part, streamed from `source`."""
        boundary = f"sandboxd-{secrets.token_hex(16)}"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f"{_filename_param(filename)}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(head) + size + len(tail)),
        }
        conn, response = self._open("POST", path, None, headers, stream=_Concat(head, source, tail))
        try:
            return json.loads(response.read())
        finally:
            conn.close()

    def download(self, path: str, sink: BinaryIO) -> int:
        """Stream a content endpoint into `sink`; returns the byte count."""
        conn, response = self._open("GET", path)
        total = 0
        try:
            while chunk := response.read(CHUNK):
                sink.write(chunk)
                total += len(chunk)
        except OSError as exc:
            raise self._translate(exc) from None
        finally:
            conn.close()
        return total


class _Concat:
    """Read head, then the file, then tail: a multipart body without holding the file."""

    def __init__(self, head: bytes, source: Readable, tail: bytes) -> None:
        self._parts: list[bytes | Readable] = [head, source, tail]

    def read(self, size: int) -> bytes:
        while self._parts:
            part = self._parts[0]
            if isinstance(part, bytes):
                self._parts.pop(0)
                if part:
                    return part
                continue
            chunk = part.read(size)
            if chunk:
                return chunk
            self._parts.pop(0)
        return b""


def _filename_param(name: str) -> str:
    if name.isascii() and name.isprintable() and '"' not in name and "\\" not in name:
        return f'filename="{name}"'
    return f"filename*=UTF-8''{urllib.parse.quote(name, safe='')}"


def _api_error(status: int, raw: bytes) -> ApiError:
    try:
        error = json.loads(raw)["error"]
        return ApiError(status, str(error["message"]), error.get("code"))
    except (ValueError, KeyError, TypeError):
        text = raw.decode(errors="replace").strip().splitlines()
        return ApiError(status, f"HTTP {status}: {text[0] if text else 'no detail'}")


def _event(raw: bytes) -> dict[str, Any]:
    try:
        event = json.loads(raw)
    except ValueError:
        raise ClientError("the daemon sent an event that is not JSON") from None
    if not isinstance(event, dict):
        raise ClientError("the daemon sent an event that is not an object")
    return event


def file_size(source: BinaryIO) -> int:
    return os.fstat(source.fileno()).st_size
