"""A minimal synchronous client of the daemon's API (http.client, keep-alive): over its unix
socket, or over TCP with an owner's bearer key."""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass
from typing import Any

TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 5.0
READ_CHUNK = 1 << 16


class UnixConnection(http.client.HTTPConnection):
    """HTTP over the API's unix socket. The benchmarks keep their own bare http.client
    connection (not sandboxd_client) so every figure pays the same, minimal client cost."""

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


class BenchError(Exception):
    """The benchmark cannot continue (daemon or runtime misbehaved)."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes  # empty when the caller asked to discard it
    size: int  # bytes of body received


class Client:
    """One persistent HTTP/1.1 connection; every figure pays the same client overhead.

    `socket_path` names the API's unix socket (the caller is its peer uid); with `tcp`
    ("HOST:PORT") the client talks TCP and authenticates with `api_key` instead.
    """

    def __init__(
        self, socket_path: str = "", timeout: float = TIMEOUT_S, *, tcp: str = "", api_key: str = ""
    ) -> None:
        if tcp:
            host, _, port = tcp.rpartition(":")
            self._conn: http.client.HTTPConnection = http.client.HTTPConnection(
                host, int(port), timeout=timeout
            )
        else:
            self._conn = UnixConnection(socket_path, timeout)
        self._auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        discard: bool = False,
    ) -> Reply:
        """One request, whatever its status; BenchError only when the transport failed.
        With `discard`, the body is read in chunks and dropped (only its size is kept)."""
        try:
            self._conn.request(method, path, body=body, headers={**self._auth, **(headers or {})})
            response = self._conn.getresponse()
            if not discard:
                raw = response.read()
                return Reply(response.status, raw, len(raw))
            size = 0
            while chunk := response.read(READ_CHUNK):
                size += len(chunk)
            return Reply(response.status, b"", size)
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()  # reconnects on the next request
            raise BenchError(f"{method} {path}: {exc!r}") from exc

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Send one request; return the decoded JSON body or raise BenchError if not 200."""
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        reply = self.request(method, path, payload, headers)
        if reply.status != 200:
            raise BenchError(f"{method} {path}: HTTP {reply.status}: {reply.body[:500]!r}")
        return json.loads(reply.body) if reply.body else None

    def text(self, path: str) -> str:
        """GET a non-JSON resource (e.g. /metrics) as text."""
        reply = self.request("GET", path)
        if reply.status != 200:
            raise BenchError(f"GET {path}: HTTP {reply.status}")
        return reply.body.decode()
