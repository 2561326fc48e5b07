"""The mitmproxy addon that enforces each sandbox's egress policy (README, Egress;
docs/egress.md).

Every hook fails closed: an exception in our code refuses the request or connection. The
decision points, in the order a connection meets them:
  client_connected   the connection must have come through a sandbox's socket (front.py)
  http_connect       CONNECT authority: hostname (no IP literal), port 443, allowlisted,
                     resolved once to vetted addresses; decides relay or intercept
  tls_clienthello    SNI must equal the CONNECT host; relay (no secret) or intercept
  server_connect     the only place a dial happens: only for a vetted tunnel, only to the
                     addresses vetted at CONNECT, with the upstream SNI pinned to the host
  requestheaders /   intercepted HTTPS only: Host/:authority and the URL host equal the
  request            CONNECT host (421), no foreign placeholder anywhere (403), secrets
                     substituted in header values, hop-by-hop proxy headers dropped; the
                     body is held whole (body_limit.py caps it) and scanned in `request`,
                     before any upstream connection exists
  responseheaders /  where a secret was substituted, its value is turned back into the
  response           placeholder in headers and body
  websocket_message  a message from the sandbox with a foreign placeholder is dropped and
                     the connection closed (1008); replies are redacted like bodies
"""

from __future__ import annotations

import logging
from typing import Any

from mitmproxy import connection, http, tls
from mitmproxy.proxy import server_hooks

from proxy.body_limit import WS_CLOSE
from proxy.options import Limits
from proxy.resolver import ResolveError, Resolver
from proxy.secrets import Redactor, Secret
from proxy.state import Connection, Registry, Sandbox
from sandbox.policy import canonical_host, is_ip_literal

logger = logging.getLogger("proxy.egress")

PROXY_HEADERS = ("proxy-authorization", "proxy-connection", "proxy-authenticate")
HTTPS_PORT = 443


def _deny_response(status: int, reason: str) -> http.Response:
    return http.Response.make(
        status,
        f"sandboxd egress: request refused ({reason})\n".encode(),
        {"X-Egress-Deny": reason, "Content-Type": "text/plain", "Connection": "close"},
    )


def _fields(headers: http.Headers) -> list[tuple[str, str]]:
    """Every header field, in order, duplicates included."""
    return list(headers.items(multi=True))  # type: ignore[no-untyped-call]


def _authority_host(value: str) -> tuple[str, int | None] | None:
    """Split 'host[:port]' ('[v6]:port' too); None when malformed."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[: end + 1], value[end + 1 :]
    else:
        host, sep, rest = value.rpartition(":")
        if not sep:
            return value, None
        rest = ":" + rest
    if not rest:
        return host, None
    digits = rest[1:]
    if not rest.startswith(":") or not (digits.isascii() and digits.isdigit()) or len(digits) > 5:
        return None
    port = int(digits)
    return (host, port) if 0 < port < 65536 else None


class EgressAddon:
    def __init__(self, registry: Registry, resolver: Resolver, limits: Limits) -> None:
        self._registry = registry
        self._resolver = resolver
        self._limits = limits

    # ------------------------------------------------------------------ bookkeeping

    def _audit(self, conn: Connection | None, decision: str, reason: str, **extra: Any) -> None:
        """Count the decision; log a line per refusal and per allowed tunnel (a substituted
        request is counted, and logged only at debug level: it is the hot path)."""
        self._registry.decisions[reason] += 1
        fields: dict[str, Any] = {"decision": decision, "reason": reason, **extra}
        if conn is not None:
            fields["container_id"] = conn.sandbox.sandbox_id
        if decision != "allow":
            level = logging.WARNING
        else:
            level = logging.DEBUG if reason == "substituted" else logging.INFO
        if logger.isEnabledFor(level):
            logger.log(level, "egress %s", decision, extra=fields)

    def _deny_flow(
        self, flow: http.HTTPFlow, conn: Connection | None, status: int, reason: str, **extra: Any
    ) -> None:
        host = flow.request.pretty_host[:255] if flow.request else ""
        self._audit(conn, "deny", reason, host=host, **extra)
        flow.response = _deny_response(status, reason)

    # ------------------------------------------------------------------ connections

    def client_connected(self, client: connection.Client) -> None:
        try:
            conn = self._registry.claim(client.id, client.peername)
        except Exception:
            logger.exception("egress hook failed: client_connected")
            conn = None
        if conn is None or not conn.usable:
            self._audit(conn, "deny", "unknown_origin")
            client.error = "sandboxd egress: connection of unknown origin"

    def client_disconnected(self, client: connection.Client) -> None:
        self._registry.forget_client(client.id)

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        conn = self._registry.of(flow.client_conn.id)
        try:
            await self._vet_connect(flow, conn)
        except Exception:
            logger.exception("egress hook failed: http_connect")
            if conn is not None:
                conn.refused = True
            self._deny_flow(flow, conn, 403, "internal_error")

    async def _vet_connect(self, flow: http.HTTPFlow, conn: Connection | None) -> None:
        if conn is None or not conn.usable:
            return self._deny_flow(flow, conn, 403, "unknown_origin")
        if conn.connect_host is not None:
            conn.refused = True
            return self._deny_flow(flow, conn, 403, "second_connect")
        raw = flow.request.host
        if is_ip_literal(raw):
            return self._deny_flow(flow, conn, 403, "ip_literal")
        host = canonical_host(raw)
        if host is None:
            return self._deny_flow(flow, conn, 403, "bad_host")
        if flow.request.port != HTTPS_PORT:
            return self._deny_flow(flow, conn, 403, "port", port=flow.request.port)
        if not conn.sandbox.policy.allows(host):
            return self._deny_flow(flow, conn, 403, "not_allowed")
        try:
            await self._resolver.resolve(host, flow.request.port)  # pins the vetted addresses
        except ResolveError as exc:
            return self._deny_flow(flow, conn, 403, exc.reason)
        if not conn.usable:
            return self._deny_flow(flow, conn, 403, "unknown_origin")
        conn.connect_host, conn.port = host, flow.request.port
        conn.intercept = conn.sandbox.intercepts(host)
        self._audit(conn, "allow", "intercept" if conn.intercept else "relay", host=host)
        return None

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        conn = self._registry.of(data.context.client.id)
        try:
            sni = data.client_hello.sni
            ok = (
                conn is not None
                and conn.usable
                and conn.connect_host is not None
                and sni is not None
                and canonical_host(sni) == conn.connect_host
            )
        except Exception:
            logger.exception("egress hook failed: tls_clienthello")
            ok = False
        if conn is not None and ok:
            conn.tunnel_ok = True
            data.ignore_connection = not conn.intercept
            return
        # Pass the bytes to a connection that server_connect will refuse: nothing is relayed.
        if conn is not None:
            conn.refused = True
        self._audit(conn, "deny", "sni_mismatch", sni=str(data.client_hello.sni)[:255])
        data.ignore_connection = True

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        conn = self._registry.of(data.client.id)
        try:
            target = data.server.address
            ok = (
                conn is not None
                and conn.usable
                and conn.tunnel_ok
                and conn.connect_host is not None
                and target is not None
                and canonical_host(str(target[0])) == conn.connect_host
                and target[1] == conn.port
                and data.server.via is None
            )
        except Exception:
            logger.exception("egress hook failed: server_connect")
            ok = False
        if not ok or conn is None or conn.connect_host is None:
            if conn is None or not conn.refused:
                self._audit(conn, "deny", "no_vetted_tunnel")
            data.server.error = "sandboxd egress: refused"
            return
        # The dial resolves the name through Resolver.dial_getaddrinfo: only the addresses
        # vetted at CONNECT. The address stays the name, so connections are reused.
        data.server.sni = conn.connect_host

    # ------------------------------------------------------------------ requests

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        conn = self._registry.of(flow.client_conn.id)
        try:
            self._vet_request_head(flow, conn)
        except Exception:
            logger.exception("egress hook failed: requestheaders")
            self._deny_flow(flow, conn, 403, "internal_error")

    def _vet_request_head(self, flow: http.HTTPFlow, conn: Connection | None) -> None:
        req = flow.request
        if conn is None or not conn.usable:
            return self._deny_flow(flow, conn, 403, "unknown_origin")
        if req.method == "CONNECT":
            return None  # http_connect decides
        secrets = conn.sandbox.secrets
        texts = [req.url, *(f"{k}: {v}" for k, v in _fields(req.headers))]
        if not (
            conn.tunnel_ok
            and conn.intercept
            and flow.client_conn.tls_established
            and req.scheme == "https"
            and conn.connect_host is not None
        ):
            if secrets.found_in("\n".join(texts)):
                return self._deny_flow(flow, conn, 403, "placeholder")
            reason = "plain_http" if req.scheme == "http" else "not_allowed"
            return self._deny_flow(flow, conn, 403, reason)
        host = conn.connect_host
        hosts = req.headers.get_all("host")
        if len(hosts) > 1:
            return self._deny_flow(flow, conn, 400, "duplicate_host")
        for value in (req.host_header, req.authority or None, *hosts):
            if value is None:
                continue
            split = _authority_host(value)
            if (
                split is None
                or canonical_host(split[0]) != host
                or split[1] not in (None, HTTPS_PORT)
            ):
                return self._deny_flow(flow, conn, 421, "host_mismatch")
        if req.host_header is None:
            return self._deny_flow(flow, conn, 400, "missing_host")
        if canonical_host(req.host) != host or req.port != HTTPS_PORT:
            return self._deny_flow(flow, conn, 421, "host_mismatch")
        foreign = secrets.foreign(host, texts)
        if foreign is not None:
            return self._deny_flow(flow, conn, 403, "placeholder", secret=foreign.name)
        length = req.headers.get("content-length", "")
        if length.isascii() and length.isdigit() and int(length) > self._limits.max_body_bytes:
            # Cut at once: answering would mean reading (buffering) the whole body first.
            self._deny_flow(flow, conn, 413, "body_too_large")
            flow.kill()  # type: ignore[no-untyped-call]
            return None
        # Any other body (no declared length: chunked, HTTP/2) is held whole too, within the
        # caps body_limit.py enforces, and scanned in `request`: never streamed, because a
        # streamed request sends its head upstream before its body has been seen.
        for name in PROXY_HEADERS:
            req.headers.pop(name, None)
        self._substitute(flow, conn, host)
        return None

    def _substitute(self, flow: http.HTTPFlow, conn: Connection, host: str) -> None:
        used: dict[str, Secret] = {}
        fields = []
        for name, value in _fields(flow.request.headers):
            new, hits = conn.sandbox.secrets.substitute(host, value)
            for secret in hits:
                used[secret.placeholder] = secret
            fields.append((name, new))
        if not used:
            return
        flow.request.headers.clear()
        for name, value in fields:
            flow.request.headers.add(name, value)
        # Ask for an identity-coded response so an echoed value can be turned back.
        flow.request.headers["accept-encoding"] = "identity"
        flow.metadata["sandboxd_substituted"] = list(used.values())
        self._registry.substitutions += len(used)
        self._audit(
            conn,
            "allow",
            "substituted",
            host=host,
            secrets=",".join(sorted(s.name for s in used.values())),
        )

    def request(self, flow: http.HTTPFlow) -> None:
        """The whole (buffered, size-capped) body is here, and nothing of the request has left
        yet: no foreign placeholder in it."""
        if flow.response is not None or flow.request.method == "CONNECT":
            return
        conn = self._registry.of(flow.client_conn.id)
        try:
            if conn is None or conn.connect_host is None:
                self._deny_flow(flow, conn, 403, "unknown_origin")
                return
            req = flow.request
            body = req.raw_content or b""
            foreign = conn.sandbox.secrets.foreign(conn.connect_host, [body])
            if foreign is not None:
                self._deny_flow(flow, conn, 403, "placeholder", secret=foreign.name)
                return
            if (
                body
                and "content-length" not in req.headers
                and "transfer-encoding" not in req.headers
            ):
                # An HTTP/2 body without content-length: the whole length is known now, and an
                # HTTP/1 upstream needs it (mitmproxy's conversion would send no framing).
                req.headers["content-length"] = str(len(body))
        except Exception:
            logger.exception("egress hook failed: request")
            self._deny_flow(flow, conn, 403, "internal_error")

    # ------------------------------------------------------------------ responses

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is None:
            return
        length = flow.response.headers.get("content-length", "")
        small = (
            length.isascii() and length.isdigit() and int(length) <= self._limits.max_redact_bytes
        )
        used: list[Secret] = flow.metadata.get("sandboxd_substituted") or []
        if not used:
            if not small:
                flow.response.stream = True  # large or unknown: never buffered here
            return
        redactor = Redactor(used)
        fields = [
            (k, redactor.whole(v.encode()).decode()) for k, v in _fields(flow.response.headers)
        ]
        flow.response.headers.clear()
        for name, value in fields:
            flow.response.headers.add(name, value)
        if not small:
            flow.response.stream = redactor
        flow.metadata["sandboxd_redactor"] = redactor

    def response(self, flow: http.HTTPFlow) -> None:
        redactor: Redactor | None = flow.metadata.get("sandboxd_redactor")
        if redactor is None or flow.response is None or flow.response.stream:
            return
        content = flow.response.get_content(strict=False)
        if content:
            flow.response.set_content(redactor.whole(content))  # updates Content-Length

    # ------------------------------------------------------------------ WebSocket

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        """Each whole message, at most max_body_bytes (else dropped, closed with 1009): from
        the sandbox, no foreign placeholder (else dropped, closed with 1008); from the
        upstream, secret values turned back into placeholders where the upgrade had them
        substituted. body_limit.py closes the connection after the hook."""
        if flow.websocket is None or not flow.websocket.messages:
            return
        message = flow.websocket.messages[-1]
        try:
            if WS_CLOSE in flow.metadata:  # being closed: nothing more passes
                message.drop()  # type: ignore[no-untyped-call]
                return
            conn = self._registry.of(flow.client_conn.id)
            if len(message.content) > self._limits.max_body_bytes:
                # body_limit.py closes on a partial message past the cap; one that ended in
                # the same read as it crossed the cap is caught here.
                message.drop()  # type: ignore[no-untyped-call]
                flow.metadata[WS_CLOSE] = (1009, "body_too_large")
                self._audit(conn, "deny", "body_too_large", host=flow.request.pretty_host[:255])
                return
            if not message.from_client:
                redactor: Redactor | None = flow.metadata.get("sandboxd_redactor")
                if redactor is not None:
                    message.content = redactor.whole(message.content)
                return
            if conn is None or not conn.usable or conn.connect_host is None:
                reason, secret = "unknown_origin", None
            else:
                secret = conn.sandbox.secrets.foreign(conn.connect_host, [message.content])
                if secret is None:
                    return
                reason = "placeholder"
        except Exception:
            logger.exception("egress hook failed: websocket_message")
            conn, reason, secret = None, "internal_error", None
        message.drop()  # type: ignore[no-untyped-call]
        flow.metadata[WS_CLOSE] = (1008, reason)
        extra = {"secret": secret.name} if secret is not None else {}
        self._audit(conn, "deny", reason, host=flow.request.pretty_host[:255], **extra)

    # ------------------------------------------------------------------ body_limit.Refusals

    def sandbox_of(self, client_id: str) -> Sandbox | None:
        conn = self._registry.of(client_id)
        return conn.sandbox if conn is not None and conn.usable else None

    def refuse_body(self, flow: http.HTTPFlow, status: int, reason: str) -> http.Response:
        self._deny_flow(flow, self._registry.of(flow.client_conn.id), status, reason)
        if flow.response is None:
            raise RuntimeError("no refusal made")
        if status == 503:
            flow.response.headers["Retry-After"] = "1"  # the budget frees as bodies finish
        return flow.response

    def refuse_message(self, flow: http.HTTPFlow, reason: str) -> None:
        conn = self._registry.of(flow.client_conn.id)
        self._audit(conn, "deny", reason, host=flow.request.pretty_host[:255])
