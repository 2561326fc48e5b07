"""A minimal synchronous JSON client over the daemon's unix socket (http.client, keep-alive)."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

TIMEOUT_S = 60.0


class BenchError(Exception):
    """The benchmark cannot continue (daemon or runtime misbehaved)."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class Client:
    """One persistent HTTP/1.1 connection; every figure pays the same client overhead."""

    def __init__(self, socket_path: str, timeout: float = TIMEOUT_S) -> None:
        self._conn = _UnixConnection(socket_path, timeout)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Send one request; return the decoded JSON body or raise BenchError if not 200."""
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            self._conn.request(method, path, body=payload, headers=headers)
            response = self._conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()  # reconnects on the next request
            raise BenchError(f"{method} {path}: {exc!r}") from exc
        if response.status != 200:
            raise BenchError(f"{method} {path}: HTTP {response.status}: {raw[:500]!r}")
        return json.loads(raw) if raw else None

    def text(self, path: str) -> str:
        """GET a non-JSON resource (e.g. /metrics) as text."""
        try:
            self._conn.request("GET", path)
            response = self._conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            raise BenchError(f"GET {path}: {exc!r}") from exc
        if response.status != 200:
            raise BenchError(f"GET {path}: HTTP {response.status}")
        return raw.decode()
