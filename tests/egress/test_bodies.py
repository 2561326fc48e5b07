"""Request bodies and WebSocket messages on intercepted tunnels: decided before anything leaves.

An intercepted request body (HTTP/1 with a length or chunked, HTTP/2 with or without
`content-length`) is buffered whole, up to `max_body_bytes`, and scanned before the proxy
even connects upstream: a refusal means the upstream saw no connection at all, and the
client gets its answer at once. Past the cap, or past the sandbox's budget of bodies held at
once, the body is refused the same way. WebSocket messages from the sandbox are scanned one
by one; a message with a foreign placeholder is never forwarded and closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time

import h2.config
import h2.connection
import h2.events
import pytest
import wsproto
import wsproto.events

from bench.upstream import Upstream, Upstreams, header
from tests.egress.conftest import FakeSandbox, ProxyHarness, Reply, client_tls, connect, read_reply

pytestmark = pytest.mark.asyncio(loop_scope="session")

SECRET = "real-secret-value-0123456789"
OTHER_SECRET = "other-secret-value-9876543210"
MIB = 1 << 20
FAST_S = 2.0  # "at once": a refusal must not wait for a timeout


@pytest.fixture
def ups(upstreams: Upstreams) -> Upstreams:
    """The upstreams, with what each received (requests, handshakes, messages) cleared."""
    for up in upstreams.servers.values():
        up.clear()
    return upstreams


def untouched(up: Upstream) -> bool:
    """Nothing reached this upstream: no TLS handshake, no request, no message."""
    return up.handshakes == 0 and up.requests == [] and up.ws_messages == []


async def secret_sandbox(h: ProxyHarness) -> FakeSandbox:
    return await h.sandbox(
        ["api.allowed.test", "other.allowed.test"],
        [
            {"name": "API_KEY", "domain": "api.allowed.test", "value": SECRET},
            {"name": "OTHER_KEY", "domain": "other.allowed.test", "value": OTHER_SECRET},
        ],
    )


def mitm(h: ProxyHarness, alpn: str = "http/1.1") -> ssl.SSLContext:
    ctx = client_tls(proxy_ca=h.proxy.ca_cert)
    ctx.set_alpn_protocols([alpn])
    return ctx


async def tunnel(
    h: ProxyHarness, sbx: FakeSandbox, host: str, alpn: str = "http/1.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer, reply = await connect(sbx.socket_path, f"{host}:443")
    assert reply.status == 200, reply
    await writer.start_tls(mitm(h, alpn), server_hostname=host)
    return reader, writer


async def h1_post(
    h: ProxyHarness, sbx: FakeSandbox, host: str, body: bytes, *, chunked: bool
) -> Reply:
    """POST `body` with Content-Length or chunked (in 64 KiB chunks); the reply."""
    reader, writer = await tunnel(h, sbx, host)
    try:
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
        writer.write(f"POST /upload HTTP/1.1\r\nHost: {host}\r\n{framing}\r\n\r\n".encode())
        if chunked:
            for i in range(0, len(body), 64 << 10):
                part = body[i : i + (64 << 10)]
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(body)
        with contextlib.suppress(ConnectionError):  # refused mid-body: the answer is in
            await writer.drain()
        return await read_reply(reader)
    finally:
        writer.close()


async def h2_post(
    h: ProxyHarness, sbx: FakeSandbox, host: str, body: bytes, *, with_length: bool
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One HTTP/2 POST (honouring flow control); status, headers and body of the answer."""
    reader, writer = await tunnel(h, sbx, host, alpn="h2")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    headers = [(":method", "POST"), (":scheme", "https"), (":path", "/upload")]
    headers += [(":authority", host)]
    if with_length:
        headers.append(("content-length", str(len(body))))
    conn.send_headers(1, headers, end_stream=not body)
    status, got_headers, got = 0, {}, b""
    sent, done = 0, False

    def handle(events: list[h2.events.Event]) -> None:
        nonlocal status, got_headers, got, done
        for event in events:
            if isinstance(event, h2.events.ResponseReceived):
                got_headers = dict(event.headers)
                status = int(got_headers[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                got += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, 1)
            elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                done = True

    try:
        while not done:
            while sent < len(body) and not done and conn.streams[1].open:
                room = min(conn.local_flow_control_window(1), conn.max_outbound_frame_size)
                if room <= 0:
                    break
                part = body[sent : sent + room]
                sent += len(part)
                conn.send_data(1, part, end_stream=sent == len(body))
            writer.write(conn.data_to_send())
            data = await asyncio.wait_for(reader.read(65536), 10)
            if not data:
                break
            handle(conn.receive_data(data))
    finally:
        writer.close()
    return status, got_headers, got


def body_with(placeholder: str, size: int = 0) -> bytes:
    """A JSON-ish body carrying `placeholder`, padded to `size` bytes."""
    body = f'{{"token": "{placeholder}", "pad": "'.encode()
    return body + b"x" * max(0, size - len(body) - 2) + b'"}'


# ------------------------------------------------------------------ foreign placeholders


@pytest.mark.parametrize(
    ("protocol", "framing"),
    [("h1", "length"), ("h1", "chunked"), ("h2", "length"), ("h2", "no-length")],
)
async def test_foreign_placeholder_in_body_refused_before_anything_leaves(
    proxy_harness: ProxyHarness, ups: Upstreams, protocol: str, framing: str
) -> None:
    """A small POST to intercepted host B whose body carries A's placeholder: 403 placeholder
    at once, and B's upstream saw nothing at all (no connection, no head, no body)."""
    sbx = await secret_sandbox(proxy_harness)
    body = body_with(sbx.placeholders["API_KEY"])  # API_KEY is for api.allowed.test
    start = time.monotonic()
    if protocol == "h1":
        reply = await h1_post(
            proxy_harness, sbx, "other.allowed.test", body, chunked=framing == "chunked"
        )
        status, deny = reply.status, reply.headers.get("x-egress-deny")
    else:
        status, headers, _ = await asyncio.wait_for(
            h2_post(
                proxy_harness, sbx, "other.allowed.test", body, with_length=framing == "length"
            ),
            FAST_S * 5,
        )
        deny = headers.get(b"x-egress-deny", b"").decode()
    elapsed = time.monotonic() - start
    assert (status, deny) == (403, "placeholder")
    assert elapsed < FAST_S, f"the refusal took {elapsed:.2f} s"
    assert untouched(ups.servers["other.allowed.test"])


@pytest.mark.parametrize("protocol", ["h1", "h2"])
async def test_clean_body_of_unknown_length_is_forwarded_whole(
    proxy_harness: ProxyHarness, ups: Upstreams, protocol: str
) -> None:
    """A chunked (HTTP/1) or length-less (HTTP/2) body without a foreign placeholder reaches
    the upstream whole, own placeholder verbatim (bodies are never substituted)."""
    sbx = await secret_sandbox(proxy_harness)
    body = body_with(sbx.placeholders["OTHER_KEY"], 3 * MIB)  # its own host: forwarded as is
    if protocol == "h1":
        reply = await h1_post(proxy_harness, sbx, "other.allowed.test", body, chunked=True)
        assert reply.status == 200, reply
    else:
        status, _, _ = await h2_post(
            proxy_harness, sbx, "other.allowed.test", body, with_length=False
        )
        assert status == 200
    (record,) = ups.servers["other.allowed.test"].requests
    assert record["body"].encode("latin-1") == body
    assert OTHER_SECRET not in record["body"]


@pytest.mark.parametrize("protocol", ["h1", "h2"])
async def test_body_of_unknown_length_over_the_cap_is_refused_unsent(
    proxy_harness: ProxyHarness, ups: Upstreams, protocol: str
) -> None:
    """A body of unknown length past max_body_bytes (8 MiB here): 413 body_too_large, and the
    upstream saw nothing of it, head included."""
    sbx = await secret_sandbox(proxy_harness)
    body = b"y" * (9 * MIB)
    if protocol == "h1":
        reply = await h1_post(proxy_harness, sbx, "other.allowed.test", body, chunked=True)
        status, deny = reply.status, reply.headers.get("x-egress-deny")
    else:
        status, headers, _ = await h2_post(
            proxy_harness, sbx, "other.allowed.test", body, with_length=False
        )
        deny = headers.get(b"x-egress-deny", b"").decode()
    assert (status, deny) == (413, "body_too_large")
    assert untouched(ups.servers["other.allowed.test"])


async def test_bodies_held_at_once_are_budgeted_per_sandbox(
    proxy_harness: ProxyHarness, ups: Upstreams
) -> None:
    """Bodies being received at once count against the sandbox's budget (32 MiB here): the
    body that would cross it is refused (503 body_budget) and nothing of it leaves; another
    sandbox is not affected, and the budget is given back once the bodies are gone."""
    a = await secret_sandbox(proxy_harness)
    b = await secret_sandbox(proxy_harness)
    held: list[asyncio.StreamWriter] = []
    part = b"z" * (7 * MIB)
    for _ in range(4):  # 28 MiB held by sandbox A, bodies not finished
        _, writer = await tunnel(proxy_harness, a, "other.allowed.test")
        writer.write(b"POST /slow HTTP/1.1\r\nHost: other.allowed.test\r\n")
        writer.write(b"Content-Length: %d\r\n\r\n" % (8 * MIB))
        writer.write(part)
        await writer.drain()
        held.append(writer)
    await asyncio.sleep(0.5)  # let the proxy take the bytes in
    try:
        reply = await h1_post(
            proxy_harness, a, "other.allowed.test", b"w" * (5 * MIB), chunked=True
        )
        assert (reply.status, reply.headers.get("x-egress-deny")) == (503, "body_budget")
        assert reply.headers.get("retry-after") == "1"
        other = await h1_post(proxy_harness, b, "other.allowed.test", b"ok" * MIB, chunked=True)
        assert other.status == 200, other
    finally:
        for writer in held:
            writer.close()
    assert [r["path"] for r in ups.servers["other.allowed.test"].requests] == ["/upload"]
    deadline = time.monotonic() + 10
    while True:  # the abandoned bodies are released once their connections are gone
        reply = await h1_post(
            proxy_harness, a, "other.allowed.test", b"v" * (5 * MIB), chunked=True
        )
        if reply.status == 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert reply.status == 200, reply


# ------------------------------------------------------------------ WebSocket


class WsClient:
    """A WebSocket client (wsproto) inside an intercepted tunnel."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.pending: list[wsproto.events.Event] = []

    async def open(self, host: str) -> None:
        self.writer.write(self.ws.send(wsproto.events.Request(host=host, target="/ws")))
        event = await self.next_event()
        assert isinstance(event, wsproto.events.AcceptConnection), event

    async def send(self, message: str | bytes) -> None:
        if isinstance(message, str):
            self.writer.write(self.ws.send(wsproto.events.TextMessage(data=message)))
        else:
            self.writer.write(self.ws.send(wsproto.events.BytesMessage(data=message)))
        await self.writer.drain()

    async def next_event(self) -> wsproto.events.Event | None:
        """The next event, or None when the connection ended without a close frame."""
        while not self.pending:
            try:
                data = await asyncio.wait_for(self.reader.read(65536), 10)
            except (ConnectionError, ssl.SSLError):
                data = b""
            self.ws.receive_data(data or None)
            self.pending.extend(self.ws.events())
            if not data and not self.pending:
                return None
        return self.pending.pop(0)

    async def receive(self) -> str | bytes | wsproto.events.CloseConnection | None:
        """The next whole message (or the close event / None)."""
        parts: list[str | bytes] = []
        while True:
            event = await self.next_event()
            if isinstance(event, wsproto.events.Message):
                parts.append(event.data)
                if event.message_finished:
                    first = parts[0]
                    return "".join(parts) if isinstance(first, str) else b"".join(parts)  # type: ignore[arg-type]
            elif isinstance(event, wsproto.events.CloseConnection) or event is None:
                return event


async def ws_client(h: ProxyHarness, sbx: FakeSandbox, host: str) -> WsClient:
    reader, writer = await tunnel(h, sbx, host)
    client = WsClient(reader, writer)
    await client.open(host)
    return client


async def test_websocket_message_with_a_foreign_placeholder_closes_the_connection(
    proxy_harness: ProxyHarness, ups: Upstreams
) -> None:
    """Over a real WebSocket to an intercepted host: clean messages pass both ways; a message
    carrying another domain's placeholder is never forwarded and the connection is closed
    (1008 policy violation); nothing after it reaches the upstream."""
    sbx = await secret_sandbox(proxy_harness)
    foreign = sbx.placeholders["API_KEY"]  # for api.allowed.test
    client = await ws_client(proxy_harness, sbx, "other.allowed.test")
    try:
        await client.send("hello")
        assert await client.receive() == "echo:hello"
        # Two messages in one write (so no write of ours can race the close): the second,
        # clean, arrives together with the refused one and is dropped with the connection.
        client.writer.write(
            client.ws.send(wsproto.events.TextMessage(data=f'{{"key": "{foreign}"}}'))
            + client.ws.send(wsproto.events.TextMessage(data="after"))
        )
        ending = await client.receive()
        assert isinstance(ending, wsproto.events.CloseConnection), ending
        assert (ending.code, ending.reason) == (1008, "placeholder")
    finally:
        client.writer.close()
    await asyncio.sleep(0.3)
    upstream = ups.servers["other.allowed.test"]
    assert upstream.ws_messages == ["hello"]
    assert not any(foreign in str(m) for m in upstream.ws_messages)


async def test_websocket_binary_message_with_a_foreign_placeholder_is_stopped(
    proxy_harness: ProxyHarness, ups: Upstreams
) -> None:
    """The same for a binary message (and a placeholder in a Basic credential inside it)."""
    import base64

    sbx = await secret_sandbox(proxy_harness)
    foreign = sbx.placeholders["API_KEY"]
    basic = base64.b64encode(f"user:{foreign}".encode())
    client = await ws_client(proxy_harness, sbx, "other.allowed.test")
    try:
        await client.send(b"\x00\xffAuthorization: Basic " + basic)
        ending = await client.receive()
        assert isinstance(ending, wsproto.events.CloseConnection), ending
        assert ending.code == 1008
    finally:
        client.writer.close()
    await asyncio.sleep(0.3)
    assert ups.servers["other.allowed.test"].ws_messages == []


async def test_websocket_own_placeholder_is_forwarded_verbatim(
    proxy_harness: ProxyHarness, ups: Upstreams
) -> None:
    """A message carrying the host's own placeholder is forwarded as is, never substituted
    (substitution happens only in header values), and the upgrade's own header is; a secret
    value in a message from the upstream is turned back into the placeholder."""
    sbx = await secret_sandbox(proxy_harness)
    own = sbx.placeholders["OTHER_KEY"]  # for other.allowed.test
    reader, writer = await tunnel(proxy_harness, sbx, "other.allowed.test")
    client = WsClient(reader, writer)
    client.writer.write(
        client.ws.send(
            wsproto.events.Request(
                host="other.allowed.test",
                target="/ws",
                extra_headers=[(b"authorization", f"Bearer {own}".encode())],
            )
        )
    )
    assert isinstance(await client.next_event(), wsproto.events.AcceptConnection)
    try:
        await client.send(f"token={own}")
        assert await client.receive() == f"echo:token={own}"
        await client.send("authorization?")  # the upstream sends the value back: redacted
        assert await client.receive() == f"Bearer {own}"
    finally:
        client.writer.close()
    upstream = ups.servers["other.allowed.test"]
    assert upstream.ws_messages == [f"token={own}"]
    assert header(upstream.requests[0], "Authorization") == [f"Bearer {OTHER_SECRET}"]


@pytest.mark.parametrize("tail", [16, MIB], ids=["ends-as-it-crosses", "crosses-mid-message"])
async def test_websocket_message_over_the_cap_closes_the_connection(
    proxy_harness: ProxyHarness, ups: Upstreams, tail: int
) -> None:
    """A message past max_body_bytes (eight 1 MiB fragments, then `tail` bytes): never
    forwarded, and the connection is closed with 1009, whether the message ended in the read
    that crossed the cap or was still arriving (the proxy stops holding it at once)."""
    sbx = await secret_sandbox(proxy_harness)
    client = await ws_client(proxy_harness, sbx, "other.allowed.test")
    try:
        fragments = [b"m" * MIB] * 8 + [b"n" * tail]
        for i, fragment in enumerate(fragments):
            last = i == len(fragments) - 1
            client.writer.write(
                client.ws.send(wsproto.events.BytesMessage(data=fragment, message_finished=last))
            )
            try:
                await client.writer.drain()
            except ConnectionError:
                break  # closed while we were still sending
        ending = await client.receive()
        if tail == 16:  # all of our writes were done before the close
            assert isinstance(ending, wsproto.events.CloseConnection), ending
            assert (ending.code, ending.reason) == (1009, "body_too_large")
        else:  # our last write may race the close (then the client only sees it end)
            assert ending is None or (
                isinstance(ending, wsproto.events.CloseConnection) and ending.code in (1006, 1009)
            ), ending
    finally:
        client.writer.close()
    await asyncio.sleep(0.3)
    assert ups.servers["other.allowed.test"].ws_messages == []
