"""Cap the size of HTTP/1 request heads inside intercepted tunnels.

mitmproxy 12 buffers a request head without bound until its blank line ("FIXME: protect
against header size DoS" in its HTTP/1 server layer). The front caps the first head of every
connection; this wraps the HTTP/1 server layer's header state so heads of requests inside an
intercepted TLS tunnel are capped too: past `limit` bytes without a complete head, the
client gets 431 and the connection is closed. Pinned to mitmproxy 12 (see pyproject).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers.http import _http1


def install_head_limit(limit: int) -> None:
    server_cls: Any = _http1.Http1Server
    original = getattr(server_cls, "_sandboxd_unlimited_read_headers", server_cls.read_headers)

    def read_headers(self: Any, event: events.ConnectionEvent) -> Generator[Any, Any, None]:
        yield from original(self, event)
        waiting = getattr(self.state, "__func__", None) is read_headers
        if waiting and isinstance(event, events.DataReceived) and len(self.buf) > limit:
            yield commands.SendData(
                self.conn, _http1.make_error_response(431, "request head too large")
            )
            yield commands.CloseConnection(self.conn)
            self.state = self.done

    server_cls._sandboxd_unlimited_read_headers = original
    server_cls.read_headers = read_headers
