"""Cap what mitmproxy holds of a message before the addon decides on it.

Intercepted request bodies are never streamed: mitmproxy buffers the whole body, the addon's
`request` hook scans it, and only then is an upstream connection made (connection strategy
`lazy`) and the head sent. So a refused body, whatever its framing (Content-Length, chunked,
HTTP/2 with or without `content-length`), means nothing of the request left the proxy.
mitmproxy buffers such bodies without bound (streaming, its only alternative, sends the head
upstream first), so this wraps the state of its HTTP stream that takes the body in:

- past `max_body_bytes` for one body: 413 `body_too_large`;
- past `max_buffered_bytes` for every body and WebSocket message a sandbox's connections
  hold at that moment: 503 `body_budget` (HTTP/2 multiplexing would otherwise let one
  connection hold a hundred bodies at once);

the client gets the refusal at once, the rest of the body is discarded, and the HTTP/1
connection is closed (an HTTP/2 stream is ended and reset with CANCEL; the connection lives on).

WebSocket messages are assembled whole before the message hook sees them; the same caps
close the connection (1009 past `max_body_bytes`, 1013 past the budget), and the hook's
refusal of a message (a foreign placeholder) closes it with 1008 after dropping the message.
Pinned to mitmproxy 12 (see pyproject), like head_limit.py.
"""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Generator
from typing import Any, Protocol

import wsproto.events
from mitmproxy import http
from mitmproxy.proxy import commands
from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.proxy.layers import websocket
from mitmproxy.proxy.layers.http import _events
from wsproto.connection import ConnectionState

from proxy.options import Limits
from proxy.state import Held, Sandbox

logger = logging.getLogger("proxy.egress")

HELD = "_sandboxd_held"  # the Held account of a stream or WebSocket layer
WS_CLOSE = "sandboxd_ws_close"  # flow.metadata: (code, reason) set by the message hook


class Refusals(Protocol):
    """What the caps need from the addon: whose connection it is, and how to refuse."""

    def sandbox_of(self, client_id: str) -> Sandbox | None: ...

    def refuse_body(self, flow: http.HTTPFlow, status: int, reason: str) -> http.Response: ...

    def refuse_message(self, flow: http.HTTPFlow, reason: str) -> None: ...


def _held(layer: Any, refusals: Refusals) -> Held:
    held: Held | None = getattr(layer, HELD, None)
    if held is None:
        sandbox = refusals.sandbox_of(layer.context.client.id)
        if sandbox is None:  # not from a sandbox's socket, or that sandbox is detached
            raise LookupError("connection of unknown origin")
        held = Held(sandbox)
        setattr(layer, HELD, held)
        weakref.finalize(layer, held.release)  # an abandoned message gives its bytes back
    return held


def install_body_limits(limits: Limits, refusals: Refusals) -> None:
    _install_request_body_limit(limits, refusals)
    _install_websocket_limit(limits, refusals)


def _install_request_body_limit(limits: Limits, refusals: Refusals) -> None:
    stream_cls: Any = http_layers.HttpStream
    consume = getattr(
        stream_cls, "_sandboxd_unlimited_consume", stream_cls.state_consume_request_body
    )
    protocol_error = getattr(
        stream_cls, "_sandboxd_unlimited_protocol_error", stream_cls.handle_protocol_error
    )

    def refuse(self: Any, status: int, reason: str) -> Generator[Any, Any, None]:
        """Answer now, discard the rest of the body; no upstream was contacted."""
        self.request_body_buf.clear()
        try:
            response = refusals.refuse_body(self.flow, status, reason)
        except Exception:
            logger.exception("egress hook failed: body refusal")
            response = self.flow.response = http.Response.make(403, b"egress: refused\n")
        self.client_state = self.server_state = self.state_errored
        self.flow.live = False
        client = self.context.client
        yield http_layers.SendHttp(_events.ResponseHeaders(self.stream_id, response, False), client)
        yield http_layers.SendHttp(
            _events.ResponseData(self.stream_id, response.raw_content or b""), client
        )
        yield http_layers.SendHttp(_events.ResponseEndOfMessage(self.stream_id), client)
        # HTTP/1: close (the client may still be sending); HTTP/2: reset the stream.
        yield http_layers.SendHttp(
            _events.ResponseProtocolError(
                self.stream_id, "request body refused", _events.ErrorCode.CANCEL
            ),
            client,
        )

    @functools.wraps(consume)
    def state_consume_request_body(self: Any, event: Any) -> Generator[Any, Any, None]:
        if isinstance(event, _events.RequestData):
            try:
                held = _held(self, refusals)
                total = len(self.request_body_buf) + len(event.data)
                verdict: tuple[int, str] | None = None
                if total > limits.max_body_bytes:
                    verdict = (413, "body_too_large")
                elif not held.fits(total, limits.max_buffered_bytes):
                    verdict = (503, "body_budget")
                held.set(0 if verdict else total)
            except LookupError:
                verdict = (403, "unknown_origin")
            except Exception:
                logger.exception("egress hook failed: request body")
                verdict = (403, "internal_error")
            if verdict is not None:
                yield from refuse(self, *verdict)
                return
        elif isinstance(event, _events.RequestEndOfMessage):
            done: Held | None = getattr(self, HELD, None)
            if done is not None:
                done.release()  # the body now belongs to the flow, on its way out
        yield from consume(self, event)

    @functools.wraps(protocol_error)
    def handle_protocol_error(self: Any, event: Any) -> Generator[Any, Any, None]:
        held = getattr(self, HELD, None)
        if held is not None:
            held.release()
        yield from protocol_error(self, event)

    stream_cls._sandboxd_unlimited_consume = consume
    stream_cls._sandboxd_unlimited_protocol_error = protocol_error
    stream_cls.state_consume_request_body = state_consume_request_body
    stream_cls.handle_protocol_error = handle_protocol_error


def _install_websocket_limit(limits: Limits, refusals: Refusals) -> None:
    layer_cls: Any = websocket.WebsocketLayer
    relay = getattr(layer_cls, "_sandboxd_unlimited_relay", layer_cls.relay_messages)

    def close(self: Any, code: int, reason: str) -> Generator[Any, Any, None]:
        """Close both sides as mitmproxy does for a close frame, with our code."""
        flow = self.flow
        for ws in (self.server_ws, self.client_ws):
            if ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                yield ws.send2(wsproto.events.CloseConnection(code=code, reason=reason))
            yield commands.CloseConnection(ws.conn)
        if flow.websocket is not None:
            flow.websocket.close_code, flow.websocket.close_reason = code, reason
        yield websocket.WebsocketEndHook(flow)
        flow.live = False
        self._handle_event = self.done

    @functools.wraps(relay)
    def relay_messages(self: Any, event: Any) -> Generator[Any, Any, None]:
        yield from relay(self, event)
        verdict: tuple[int, str] | None = None
        try:
            held = _held(self, refusals)
            if self._handle_event != self.relay_messages:  # closed while relaying
                held.release()
                return
            verdict = self.flow.metadata.pop(WS_CLOSE, None)  # the message hook's refusal
            if verdict is None:
                sizes = [sum(map(len, ws.frame_buf)) for ws in (self.client_ws, self.server_ws)]
                if max(sizes) > limits.max_body_bytes:
                    verdict = (1009, "body_too_large")
                elif not held.fits(sum(sizes), limits.max_buffered_bytes):
                    verdict = (1013, "body_budget")
                else:
                    held.set(sum(sizes))
                if verdict is not None:
                    refusals.refuse_message(self.flow, verdict[1])
        except Exception:
            logger.exception("egress hook failed: websocket message")
            verdict = (1011, "internal_error")
        if verdict is not None:
            account: Held | None = getattr(self, HELD, None)
            if account is not None:
                account.release()
            yield from close(self, *verdict)

    layer_cls._sandboxd_unlimited_relay = relay
    layer_cls.relay_messages = relay_messages
