"""The proxy's front door: one listening unix socket per sandbox, handed over by the daemon.

The socket a connection arrived on is its sandbox's identity. The front caps concurrent
connections per sandbox, reads the first request head itself (size cap, header-read
timeout, so a slowloris or an endless head never reaches mitmproxy), registers the
connection, and hands the stream to mitmproxy's regular-proxy handler under a peername
that only the front can produce.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any, Protocol

from proxy.options import Limits
from proxy.state import ORIGIN_HOST, Registry, Sandbox

logger = logging.getLogger("proxy.front")


class StreamHandler(Protocol):
    async def handle_stream(self, reader: Any, writer: Any) -> None: ...


class _PrefixedReader:
    """A StreamReader that first returns the bytes the front already read."""

    def __init__(self, prefix: bytes, reader: asyncio.StreamReader) -> None:
        self._prefix = prefix
        self._reader = reader

    async def read(self, n: int = -1) -> bytes:
        if self._prefix:
            data, self._prefix = self._prefix, b""
            return data
        return await self._reader.read(n)


class _OriginWriter:
    """The sandbox connection's StreamWriter, with the peername the hooks look up."""

    def __init__(self, writer: asyncio.StreamWriter, serial: int) -> None:
        self._writer = writer
        self._peer = (ORIGIN_HOST, serial)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peer
        if name == "sockname":
            return ("127.0.0.1", 3128)
        if name == "socket":
            return None
        return self._writer.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)


class Front:
    def __init__(self, registry: Registry, limits: Limits) -> None:
        self._registry = registry
        self._limits = limits
        self._handler: StreamHandler | None = None

    def set_handler(self, handler: StreamHandler) -> None:
        self._handler = handler

    async def attach(self, sandbox: Sandbox, fd: int) -> None:
        sock = socket.socket(fileno=fd)
        try:
            if sock.family != socket.AF_UNIX or not sock.getsockopt(
                socket.SOL_SOCKET, socket.SO_ACCEPTCONN
            ):
                raise ValueError("not a listening unix socket")
            sock.setblocking(False)
            sandbox.server = await asyncio.start_unix_server(
                lambda r, w: self._serve(sandbox, r, w),
                sock=sock,
                limit=self._limits.max_head_bytes,
            )
        except BaseException:
            sock.close()
            raise

    async def detach(self, sandbox: Sandbox) -> None:
        sandbox.detached = True
        if sandbox.server is not None:
            sandbox.server.close()
        for conn in list(sandbox.connections):
            if conn.writer is not None:
                conn.writer.close()

    async def _serve(
        self, sandbox: Sandbox, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if sandbox.detached or len(sandbox.connections) >= self._limits.max_connections:
            self._registry.decisions["connection_limit"] += 1
            writer.close()
            return
        conn = self._registry.new_connection(sandbox)
        conn.writer = writer
        try:
            head = await self._read_head(sandbox, reader, writer)
            if head is None or self._handler is None:
                return
            await self._handler.handle_stream(
                _PrefixedReader(head, reader), _OriginWriter(writer, conn.serial)
            )
        finally:
            self._registry.forget(conn)
            writer.close()

    async def _read_head(
        self, sandbox: Sandbox, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes | None:
        reason, status = "", b""
        try:
            async with asyncio.timeout(self._limits.header_timeout_s):
                return await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            reason, status = "header_timeout", b"408 Request Timeout"
        except asyncio.LimitOverrunError:
            reason, status = "head_too_large", b"431 Request Header Fields Too Large"
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        self._registry.decisions[reason] += 1
        logger.warning(
            "egress connection cut",
            extra={"container_id": sandbox.sandbox_id, "reason": reason},
        )
        with contextlib.suppress(ConnectionError, RuntimeError):
            writer.write(
                b"HTTP/1.1 "
                + status
                + b"\r\nX-Egress-Deny: "
                + reason.encode()
                + b"\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            )
        return None
