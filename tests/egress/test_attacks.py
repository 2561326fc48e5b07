"""The numbered attack cases of docs/egress.md against the real proxy process (no sandbox needed for
these: the test connects to a sandbox's egress socket exactly as its agent would).

Cases 18 and 24 (no route, no resolver, nothing of the host reachable) need a real sandbox:
tests/egress/test_sandbox_egress.py. Each test asserts on what the upstream received, so a
refusal that still leaked the request would fail.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl

import pytest

from bench.upstream import ThrowawayCA, Upstreams, header
from tests.egress.conftest import (
    FakeSandbox,
    ProxyHarness,
    Reply,
    client_tls,
    connect,
    https_request,
    read_reply,
)

# One event loop for the module and the session-scoped proxy it shares.
pytestmark = pytest.mark.asyncio(loop_scope="session")

SECRET = "real-secret-value-0123456789"
OTHER_SECRET = "other-secret-value-9876543210"


def req(host: str, *extra: str, path: str = "/", method: str = "GET", body: str = "") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *extra, "Connection: close"]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


@pytest.fixture
def seen(upstreams: Upstreams):  # type: ignore[no-untyped-def]
    """Requests each upstream received during the test."""
    for up in upstreams.servers.values():
        up.requests.clear()

    def requests(name: str) -> list[dict]:  # type: ignore[type-arg]
        return upstreams.servers[name].requests

    return requests


async def secret_sandbox(h: ProxyHarness, *domains: str) -> FakeSandbox:
    return await h.sandbox(
        list(domains) or ["api.allowed.test", "other.allowed.test"],
        [
            {"name": "API_KEY", "domain": "api.allowed.test", "value": SECRET},
            {"name": "OTHER_KEY", "domain": "other.allowed.test", "value": OTHER_SECRET},
        ],
    )


def mitm(h: ProxyHarness) -> ssl.SSLContext:
    return client_tls(proxy_ca=h.proxy.ca_cert)


# 1
async def test_01_connect_to_unlisted_host(
    proxy_harness: ProxyHarness, test_ca: ThrowawayCA, seen
) -> None:  # type: ignore[no-untyped-def]
    """CONNECT to a host not on the list: 403 at CONNECT, zero upstream dials."""
    sbx = await proxy_harness.sandbox(["api.allowed.test"])
    reply = await https_request(sbx.socket_path, "evil.test", client_tls(test_ca))
    assert (reply.status, reply.headers["x-egress-deny"]) == (403, "not_allowed")
    assert seen("evil.test") == []


# 2
async def test_02_absolute_form_plain_http(proxy_harness: ProxyHarness, seen) -> None:  # type: ignore[no-untyped-def]
    """Absolute-form `GET http://...` (listed or not): 403, nothing reaches an upstream."""
    sbx = await proxy_harness.sandbox(["api.allowed.test", "evil.test"])
    for target in ("http://evil.test/", "http://api.allowed.test/"):
        reader, writer = await asyncio.open_unix_connection(str(sbx.socket_path))
        writer.write(f"GET {target} HTTP/1.1\r\nHost: evil.test\r\n\r\n".encode())
        reply = await read_reply(reader)
        writer.close()
        assert reply.status == 403, target
    assert seen("evil.test") == [] and seen("api.allowed.test") == []


# 3
@pytest.mark.parametrize("with_secret", [True, False])
async def test_03_sni_of_another_host(
    proxy_harness: ProxyHarness, test_ca: ThrowawayCA, with_secret: bool, seen
) -> None:  # type: ignore[no-untyped-def]
    """Allowlisted CONNECT with another host's SNI, or none (relayed and intercepted): refused,
    nothing relayed."""
    sbx = await (
        secret_sandbox(proxy_harness)
        if with_secret
        else proxy_harness.sandbox(["api.allowed.test", "other.allowed.test"])
    )
    ctx = mitm(proxy_harness) if with_secret else client_tls(test_ca)
    for sni in ("evil.test", "other.allowed.test"):
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            await https_request(sbx.socket_path, "api.allowed.test", ctx, sni=sni)
    ctx.check_hostname = False
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        await https_request(sbx.socket_path, "api.allowed.test", ctx, sni="")  # no SNI at all
    assert seen("api.allowed.test") == [] and seen("evil.test") == []
    assert seen("other.allowed.test") == []


# 4
async def test_04_inner_host_differs(proxy_harness: ProxyHarness, seen) -> None:  # type: ignore[no-untyped-def]
    """Inner Host / absolute URL differing from the CONNECT host in an intercepted tunnel: 421."""
    sbx = await secret_sandbox(proxy_harness)
    for host_header in ("other.allowed.test", "evil.test", "api.allowed.test:8443"):
        reply = await https_request(
            sbx.socket_path, "api.allowed.test", mitm(proxy_harness), req(host_header)
        )
        assert reply.status == 421, host_header
    reply = await https_request(
        sbx.socket_path,
        "api.allowed.test",
        mitm(proxy_harness),
        req("api.allowed.test", path="https://evil.test/"),
    )
    assert reply.status in (400, 421)
    assert seen("api.allowed.test") == [] and seen("other.allowed.test") == []
    assert seen("evil.test") == []


# 5
@pytest.mark.parametrize("variant", ["API.Allowed.TEST", "api.allowed.test.", "Api.Allowed.Test."])
async def test_05_case_and_trailing_dot(
    proxy_harness: ProxyHarness, test_ca: ThrowawayCA, variant: str, seen
) -> None:  # type: ignore[no-untyped-def]
    """Case and trailing-dot variants of an allowed host: allowed."""
    sbx = await proxy_harness.sandbox(["api.allowed.test"])
    reader, writer, reply = await connect(sbx.socket_path, f"{variant}:443")
    assert reply.status == 200
    await writer.start_tls(client_tls(test_ca), server_hostname="api.allowed.test")
    writer.write(req("api.allowed.test"))
    assert (await read_reply(reader)).status == 200
    writer.close()
    assert len(seen("api.allowed.test")) == 1


# 6
@pytest.mark.parametrize(
    "authority",
    [
        "127.0.0.1:443",
        "[::1]:443",
        "169.254.169.254:443",
        "2130706433:443",
        "0x7f.1:443",
        "0177.0.0.1:443",
        "127.1:443",
        "[::ffff:127.0.0.1]:443",
    ],
)
async def test_06_ip_literals(proxy_harness: ProxyHarness, authority: str) -> None:
    """IP-literal CONNECTs in every spelling: 403."""
    sbx = await proxy_harness.sandbox(["api.allowed.test"])
    _, writer, reply = await connect(sbx.socket_path, authority)
    writer.close()
    assert reply.status == 403 and reply.headers["x-egress-deny"] in ("ip_literal", "bad_host")


# 7
@pytest.mark.parametrize(
    "host",
    [
        "loop.allowed.test",
        "ten.allowed.test",
        "cgnat.allowed.test",
        "meta.allowed.test",
        "v6loop.allowed.test",
        "mapped.allowed.test",
    ],
)
async def test_07_names_resolving_to_private_addresses(
    proxy_harness: ProxyHarness, host: str
) -> None:
    """Allowlisted names resolving to loopback, RFC1918, CGNAT, metadata, ::1, mapped v4: refused,
    no dial."""
    sbx = await proxy_harness.sandbox(["*.allowed.test"])
    _, writer, reply = await connect(sbx.socket_path, f"{host}:443")
    writer.close()
    assert (reply.status, reply.headers["x-egress-deny"]) == (403, "non_global_address")


# 8
async def test_08_rebinding_dials_only_the_vetted_address(
    proxy_harness: ProxyHarness,
    test_ca: ThrowawayCA,
    seen,  # type: ignore[no-untyped-def]
) -> None:
    """Resolver answers public first, loopback second: only the vetted address is dialled."""
    sbx = await proxy_harness.sandbox(["rebind.allowed.test"])
    for _ in range(3):
        reply = await https_request(sbx.socket_path, "rebind.allowed.test", client_tls(test_ca))
        assert reply.status == 200
    assert len(seen("rebind.allowed.test")) == 3  # 127.0.0.6 served all; 127.0.0.1 never vetted


# 9
async def test_09_redirect_to_unlisted_host(
    proxy_harness: ProxyHarness, test_ca: ThrowawayCA, seen
) -> None:  # type: ignore[no-untyped-def]
    """Upstream 302 to a host not on the list: 302 relayed, the follow-up CONNECT gets 403."""
    sbx = await proxy_harness.sandbox(["api.allowed.test"])
    reply = await https_request(
        sbx.socket_path,
        "api.allowed.test",
        client_tls(test_ca),
        req("api.allowed.test", path="/redirect"),
    )
    assert reply.status == 302 and reply.headers["location"] == "https://evil.test/landing"
    follow = await https_request(sbx.socket_path, "evil.test", client_tls(test_ca))
    assert follow.status == 403
    assert seen("evil.test") == []


# 10
async def test_10_placeholder_substituted_for_its_host(proxy_harness: ProxyHarness, seen) -> None:  # type: ignore[no-untyped-def]
    """Own placeholder in Authorization (and in a Basic credential) to the secret's host: upstream
    sees the real value."""
    sbx = await secret_sandbox(proxy_harness)
    ph = sbx.placeholders["API_KEY"]
    basic = base64.b64encode(f"user:{ph}".encode()).decode()
    reply = await https_request(
        sbx.socket_path,
        "api.allowed.test",
        mitm(proxy_harness),
        req("api.allowed.test", f"Authorization: Bearer {ph}", f"X-Basic: Basic {basic}"),
    )
    assert reply.status == 200
    got = seen("api.allowed.test")[-1]
    assert header(got, "Authorization") == [f"Bearer {SECRET}"]
    assert base64.b64decode(header(got, "X-Basic")[0].split()[1]).decode() == f"user:{SECRET}"
    assert SECRET not in reply.body.decode() and ph in reply.body.decode()  # echo turned back


async def test_10b_echoed_value_turned_back(proxy_harness: ProxyHarness) -> None:
    """A value echoed back by the upstream is turned back into the placeholder (headers and
    body)."""
    sbx = await secret_sandbox(proxy_harness)
    ph = sbx.placeholders["API_KEY"]
    reply = await https_request(
        sbx.socket_path,
        "api.allowed.test",
        mitm(proxy_harness),
        req("api.allowed.test", f"Authorization: Bearer {ph}", path="/echo-auth"),
    )
    assert reply.status == 200
    assert reply.body == f"you sent Bearer {ph}".encode()
    assert reply.headers["x-echo"] == f"Bearer {ph}"


# 11
@pytest.mark.parametrize("where", ["header", "body", "path"])
async def test_11_placeholder_to_another_intercepted_host(
    proxy_harness: ProxyHarness,
    where: str,
    seen,  # type: ignore[no-untyped-def]
) -> None:
    """Own placeholder to another intercepted allowlisted host (header, body, URL): 403
    placeholder, not forwarded."""
    sbx = await secret_sandbox(proxy_harness)
    ph = sbx.placeholders["API_KEY"]  # its domain is api.allowed.test
    if where == "header":
        request = req("other.allowed.test", f"X-Token: {ph}")
    elif where == "body":
        request = req("other.allowed.test", method="POST", body=f'{{"token": "{ph}"}}')
    else:
        request = req("other.allowed.test", path=f"/?t={ph}")
    reply = await https_request(sbx.socket_path, "other.allowed.test", mitm(proxy_harness), request)
    assert (reply.status, reply.headers["x-egress-deny"]) == (403, "placeholder")
    assert seen("other.allowed.test") == []


async def test_11b_intercept_all_config_refuses_placeholder_to_secretless_host(
    egress_dir,
    test_ca: ThrowawayCA,
    upstreams: Upstreams,  # type: ignore[no-untyped-def]
) -> None:
    """With intercept = all, a placeholder to an allowed host without that secret: 403
    placeholder."""

    import tempfile
    from pathlib import Path

    from daemon.egress_proxy import EgressProxy
    from daemon.metrics import Metrics
    from daemon.tasks import TaskSupervisor
    from tests.egress.conftest import proxy_settings

    base = Path(tempfile.mkdtemp(prefix="pxa-", dir=egress_dir))
    base.chmod(0o755)
    tasks = TaskSupervisor()
    proxy = EgressProxy(proxy_settings(base, test_ca, intercept_all=True), Metrics("oci"), tasks)
    await proxy.start()
    try:
        h = ProxyHarness(proxy, Metrics("oci"), base)
        sbx = await h.sandbox(
            ["api.allowed.test", "index.allowed.test"],
            [{"name": "API_KEY", "domain": "api.allowed.test", "value": SECRET}],
        )
        ph = sbx.placeholders["API_KEY"]
        ctx = client_tls(proxy_ca=proxy.ca_cert)
        ok = await https_request(
            sbx.socket_path, "index.allowed.test", ctx, req("index.allowed.test")
        )
        assert ok.status == 200  # intercepted (our CA), reachable
        bad = await https_request(
            sbx.socket_path,
            "index.allowed.test",
            ctx,
            req("index.allowed.test", f"Authorization: Bearer {ph}"),
        )
        assert (bad.status, bad.headers["x-egress-deny"]) == (403, "placeholder")
    finally:
        await tasks.close(5)
        await proxy.close()


# 12
async def test_12_placeholder_in_query_is_not_substituted(
    proxy_harness: ProxyHarness, seen
) -> None:  # type: ignore[no-untyped-def]
    """Placeholder in the query string to its own host: forwarded verbatim, never substituted."""
    sbx = await secret_sandbox(proxy_harness)
    ph = sbx.placeholders["API_KEY"]
    reply = await https_request(
        sbx.socket_path,
        "api.allowed.test",
        mitm(proxy_harness),
        req("api.allowed.test", path=f"/q?key={ph}"),
    )
    assert reply.status == 200
    got = seen("api.allowed.test")[-1]
    assert got["query"] == f"key={ph}"
    assert SECRET not in json.dumps(got)


# 13
async def test_13_placeholder_through_relayed_tunnel(
    proxy_harness: ProxyHarness, test_ca: ThrowawayCA, seen
) -> None:  # type: ignore[no-untyped-def]
    """Placeholder through a relayed (no-secret) tunnel: upstream sees only the placeholder."""
    sbx = await proxy_harness.sandbox(
        ["api.allowed.test", "index.allowed.test"],
        [{"name": "API_KEY", "domain": "api.allowed.test", "value": SECRET}],
    )
    ph = sbx.placeholders["API_KEY"]
    reply = await https_request(
        sbx.socket_path,
        "index.allowed.test",
        client_tls(test_ca),
        req("index.allowed.test", f"Authorization: Bearer {ph}"),
    )
    assert reply.status == 200  # relayed untouched: the proxy cannot and does not look
    got = seen("index.allowed.test")[-1]
    assert header(got, "Authorization") == [f"Bearer {ph}"]


# 14
async def test_14_placeholder_over_plain_http(proxy_harness: ProxyHarness, seen) -> None:  # type: ignore[no-untyped-def]
    """Placeholder over plain HTTP: 403."""
    sbx = await secret_sandbox(proxy_harness)
    ph = sbx.placeholders["API_KEY"]
    reader, writer = await asyncio.open_unix_connection(str(sbx.socket_path))
    writer.write(
        f"GET http://api.allowed.test/ HTTP/1.1\r\nHost: api.allowed.test\r\n"
        f"Authorization: Bearer {ph}\r\n\r\n".encode()
    )
    reply = await read_reply(reader)
    writer.close()
    assert (reply.status, reply.headers["x-egress-deny"]) == (403, "placeholder")
    assert seen("api.allowed.test") == []


# 15
@pytest.mark.parametrize(
    "raw",
    [
        "POST / HTTP/1.1\r\nHost: api.allowed.test\r\nContent-Length: 5\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: api.allowed.test\r\nHost: evil.test\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: api.allowed.test\r\nX-Folded: a\r\n b\r\n\r\n",
    ],
    ids=["cl-te", "duplicate-host", "obs-fold"],
)
async def test_15_smuggling_shapes(proxy_harness: ProxyHarness, raw: str, seen) -> None:  # type: ignore[no-untyped-def]
    """CL+TE smuggling, duplicate Host, obs-fold headers: 400/421 or cut, not forwarded."""
    sbx = await secret_sandbox(proxy_harness)
    try:
        reply = await https_request(
            sbx.socket_path, "api.allowed.test", mitm(proxy_harness), raw.encode()
        )
        assert reply.status in (400, 421)
    except (ConnectionError, asyncio.IncompleteReadError):
        pass  # cut without an answer is a refusal too
    assert seen("api.allowed.test") == []


# 17
@pytest.mark.parametrize("port", [22, 80, 8443, 0, 65535])
async def test_17_other_ports(proxy_harness: ProxyHarness, port: int) -> None:
    """CONNECT to an allowed host on any port but 443: refused."""
    sbx = await proxy_harness.sandbox(["api.allowed.test"])
    _, writer, reply = await connect(sbx.socket_path, f"api.allowed.test:{port}")
    writer.close()
    assert reply.status in (400, 403)


# 19
@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("wild.test", False),
        ("evilwild.test", False),
        ("x.wild.test.evil.test", False),
        ("a.b.wild.test", True),
    ],
)
async def test_19_wildcard(
    proxy_harness: ProxyHarness, test_ca: ThrowawayCA, host: str, allowed: bool
) -> None:
    """`*.wild.test` policy: apex, lookalike suffix and suffix-embedding hosts 403; deeper names
    allowed."""
    sbx = await proxy_harness.sandbox(["*.wild.test"])
    _, writer, reply = await connect(sbx.socket_path, f"{host}:443")
    writer.close()
    assert reply.status == (200 if allowed else 403)


# 20
@pytest.mark.parametrize(
    "host", ["\u0430pi.allowed.test", "api.allowed.t\u00e9st", "xn--pi-8kc.allowed.test"]
)
async def test_20_non_ascii_and_homoglyph(proxy_harness: ProxyHarness, host: str) -> None:
    """Non-ASCII, homoglyph and punycode-lookalike hosts: refused."""
    sbx = await proxy_harness.sandbox(["api.allowed.test"])
    reader, writer = await asyncio.open_unix_connection(str(sbx.socket_path))
    writer.write(f"CONNECT {host}:443 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    try:
        reply = await read_reply(reader)
        assert reply.status in (400, 403)
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


# 22
@pytest.mark.parametrize("target", ["http://mitm.it/", "http://mitm.it/cert/pem"])
async def test_22_proxy_ui_paths(proxy_harness: ProxyHarness, target: str) -> None:
    """`http://mitm.it/` and other proxy UI paths: 403."""
    sbx = await proxy_harness.sandbox(["api.allowed.test"])
    reader, writer = await asyncio.open_unix_connection(str(sbx.socket_path))
    writer.write(f"GET {target} HTTP/1.1\r\nHost: mitm.it\r\n\r\n".encode())
    reply = await read_reply(reader)
    writer.close()
    assert reply.status == 403


async def test_22b_mitm_it_inside_a_tunnel(proxy_harness: ProxyHarness) -> None:
    """`mitm.it` as a CONNECT target: refused (never served by the proxy)."""
    sbx = await proxy_harness.sandbox(["mitm.it"])
    _, writer, reply = await connect(sbx.socket_path, "mitm.it:443")
    writer.close()
    assert reply.status == 403  # not resolvable to a vetted address here, never served locally


# 23
async def test_23_placeholder_of_another_sandbox(proxy_harness: ProxyHarness, seen) -> None:  # type: ignore[no-untyped-def]
    """Sandbox A's placeholder or proxy credentials used from sandbox B: never substituted;
    identity is the socket."""
    a = await secret_sandbox(proxy_harness)
    b = await secret_sandbox(proxy_harness)
    reply = await https_request(
        b.socket_path,
        "api.allowed.test",
        mitm(proxy_harness),
        req("api.allowed.test", f"Authorization: Bearer {a.placeholders['API_KEY']}"),
    )
    assert reply.status == 200
    got = seen("api.allowed.test")[-1]
    assert header(got, "Authorization") == [f"Bearer {a.placeholders['API_KEY']}"]
    reader, writer = await asyncio.open_unix_connection(str(b.socket_path))
    writer.write(
        b"CONNECT api.allowed.test:443 HTTP/1.1\r\nProxy-Authorization: Basic eDp5\r\n\r\n"
    )
    assert (
        await read_reply(reader)
    ).status == 200  # credentials mean nothing: identity is the socket
    writer.close()


async def test_unknown_origin_is_refused(proxy_harness: ProxyHarness) -> None:
    """A detached sandbox's socket is gone; a connection that is not from a sandbox socket
    cannot reach mitmproxy at all (it has no listener)."""
    sbx = await proxy_harness.sandbox(["api.allowed.test"])
    await proxy_harness.proxy.detach(sbx.sandbox_id)
    with pytest.raises((FileNotFoundError, ConnectionError)):
        await connect(sbx.socket_path, "api.allowed.test:443")


def _unused(r: Reply) -> None:  # keep the import used for type checkers
    del r


# 16
async def test_16_http2_authority_checked_and_substituted(
    proxy_harness: ProxyHarness, seen
) -> None:  # type: ignore[no-untyped-def]
    """HTTP/2 to an allowed host: works, :authority checked (421), header substituted."""
    import h2.config
    import h2.connection
    import h2.events

    sbx = await secret_sandbox(proxy_harness)
    ph = sbx.placeholders["API_KEY"]
    ctx = mitm(proxy_harness)
    ctx.set_alpn_protocols(["h2"])

    async def h2_get(authority: str) -> tuple[int, bytes]:
        reader, writer, reply = await connect(sbx.socket_path, "api.allowed.test:443")
        assert reply.status == 200
        await writer.start_tls(ctx, server_hostname="api.allowed.test")
        ssl_obj = writer.get_extra_info("ssl_object")
        assert ssl_obj.selected_alpn_protocol() == "h2"
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.send_headers(
            1,
            [
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/h2"),
                (":authority", authority),
                ("authorization", f"Bearer {ph}"),
            ],
            end_stream=True,
        )
        writer.write(conn.data_to_send())
        status, body = 0, b""
        try:
            while True:
                data = await asyncio.wait_for(reader.read(65536), 10)
                if not data:
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        status = int(dict(event.headers)[b":status"])
                    elif isinstance(event, h2.events.DataReceived):
                        body += event.data
                        conn.acknowledge_received_data(event.flow_controlled_length, 1)
                    elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                        return status, body
                writer.write(conn.data_to_send())
        finally:
            writer.close()
        return status, body

    status, _ = await h2_get("api.allowed.test")
    assert status == 200
    got = seen("api.allowed.test")[-1]
    assert header(got, "Authorization") == [f"Bearer {SECRET}"]
    status, _ = await h2_get("other.allowed.test")
    assert status == 421
    assert len(seen("api.allowed.test")) == 1


async def endless_head(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit: int = 256 << 20
) -> tuple[int, bytes]:
    """Send header lines without end until the proxy cuts the connection: the bytes sent
    while it was open, and what the proxy said before closing.

    The close is detected from our side of the connection itself (the peer's FIN or RST
    seen by a reader task, the transport closing, a failed drain), never from a count of
    writes: asyncio keeps accepting writes on a transport whose socket already failed, and
    a write loop whose drain never waits does not yield to the loop, so on a busy machine
    nothing would stop the count before `limit`."""
    closed = asyncio.Event()
    said = bytearray()

    async def watch() -> None:
        try:
            while chunk := await reader.read(65536):
                said.extend(chunk[: 4096 - len(said)])
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            closed.set()

    watcher = asyncio.ensure_future(watch())
    sent = 0
    chunk = b"X-Pad: " + b"a" * 8000 + b"\r\n"
    try:
        while sent < limit and not closed.is_set() and not writer.is_closing():
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), 5)
            sent += len(chunk)
            await asyncio.sleep(0)  # let the reader and connection_lost() run
    except (ConnectionError, ssl.SSLError):
        pass
    try:
        await asyncio.wait_for(closed.wait(), 10)
    finally:
        watcher.cancel()
    return sent, bytes(said)


# 21
async def test_21_endless_head_is_cut(proxy_harness: ProxyHarness) -> None:
    """Endless request head before CONNECT: cut (431) after a bounded size."""
    sbx = await proxy_harness.sandbox(["api.allowed.test"])
    reader, writer = await asyncio.open_unix_connection(str(sbx.socket_path))
    writer.write(b"CONNECT api.allowed.test:443 HTTP/1.1\r\n")
    sent, head = await endless_head(reader, writer)
    assert head.startswith(b"HTTP/1.1 431") or head == b""
    assert sent < 4 << 20  # cut long before the whole head was sent
    writer.close()


async def test_21_endless_head_inside_an_intercepted_tunnel_is_cut(
    proxy_harness: ProxyHarness,
) -> None:
    """Endless request head inside an intercepted tunnel: cut after a bounded size."""
    sbx = await secret_sandbox(proxy_harness)
    reader, writer, reply = await connect(sbx.socket_path, "api.allowed.test:443")
    assert reply.status == 200
    await writer.start_tls(mitm(proxy_harness), server_hostname="api.allowed.test")
    writer.write(b"GET / HTTP/1.1\r\nHost: api.allowed.test\r\n")
    sent, _ = await endless_head(reader, writer)
    assert sent < 4 << 20
    writer.close()


async def test_21_slowloris_is_cut_after_the_header_timeout(proxy_harness: ProxyHarness) -> None:
    """Slowloris head: 408 and cut after the header timeout."""
    sbx = await proxy_harness.sandbox(["api.allowed.test"])
    reader, writer = await asyncio.open_unix_connection(str(sbx.socket_path))
    writer.write(b"CONNECT api.allowed.test:443 HTTP/1.1\r\n")
    loop = asyncio.get_running_loop()
    start = loop.time()
    reply = await asyncio.wait_for(read_reply(reader), 10)  # the harness's timeout is 2 s
    assert reply.status == 408
    assert 1.5 < loop.time() - start < 6
    writer.close()


async def test_21_connection_cap_per_sandbox(
    proxy_harness: ProxyHarness, test_ca: ThrowawayCA
) -> None:
    """Connection flood from one sandbox over its cap: another sandbox still served within 1 s."""
    a = await proxy_harness.sandbox(["api.allowed.test"])
    b = await proxy_harness.sandbox(["api.allowed.test"])
    held = []
    for _ in range(200):  # the harness allows 64 per sandbox
        _, w = await asyncio.open_unix_connection(str(a.socket_path))
        w.write(b"CONNECT api.allowed.test:443 HTTP/1.1\r\n")
        held.append(w)
    await asyncio.sleep(0.2)
    loop = asyncio.get_running_loop()
    start = loop.time()
    reply = await https_request(b.socket_path, "api.allowed.test", client_tls(test_ca))
    assert reply.status == 200
    assert loop.time() - start < 1.0
    for w in held:
        w.close()


async def test_decisions_are_counted(proxy_harness: ProxyHarness, test_ca: ThrowawayCA) -> None:
    """Every decision is counted by reason in the daemon's metrics."""
    sbx = await proxy_harness.sandbox(["api.allowed.test"])
    await https_request(sbx.socket_path, "evil.test", client_tls(test_ca))
    await https_request(sbx.socket_path, "api.allowed.test", client_tls(test_ca))
    await asyncio.sleep(1.2)  # two health checks: the counters come with the ping replies
    text = proxy_harness.metrics.render().decode()
    for reason in ("not_allowed", "relay"):
        line = next(
            line
            for line in text.splitlines()
            if line.startswith(f'sandboxd_egress_decisions_total{{reason="{reason}"}}')
        )
        assert float(line.split()[-1]) >= 1


async def test_keepalive_tunnel_reuses_its_upstream_connection(
    proxy_harness: ProxyHarness,
    seen,  # type: ignore[no-untyped-def]
) -> None:
    """Keep-alive requests in one tunnel reuse one upstream connection (no leak, no stall)."""
    sbx = await secret_sandbox(proxy_harness)
    reader, writer, reply = await connect(sbx.socket_path, "api.allowed.test:443")
    assert reply.status == 200
    await writer.start_tls(mitm(proxy_harness), server_hostname="api.allowed.test")
    for i in range(12):  # more than mitmproxy's 5 server connections per client connection
        writer.write(f"GET /k{i} HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n".encode())
        assert (await read_reply(reader)).status == 200
    writer.close()
    assert [r["path"] for r in seen("api.allowed.test")] == [f"/k{i}" for i in range(12)]


async def test_large_download_through_an_intercepted_tunnel(
    proxy_harness: ProxyHarness, upstreams: Upstreams
) -> None:
    """Responses above the buffering cap stream (never refused, never held whole)."""
    big = bytes(range(256)) * (48 << 10)  # 12 MiB, more than max_body_bytes (8 MiB)
    upstreams.servers["api.allowed.test"].files["/big"] = ("application/octet-stream", big)
    sbx = await secret_sandbox(proxy_harness)
    reply = await https_request(
        sbx.socket_path,
        "api.allowed.test",
        mitm(proxy_harness),
        req("api.allowed.test", path="/big"),
    )
    assert reply.status == 200
    assert reply.body == big


async def test_declared_body_over_the_cap_is_refused(proxy_harness: ProxyHarness, seen) -> None:  # type: ignore[no-untyped-def]
    """A declared request body over the cap: cut unread, nothing forwarded."""
    sbx = await secret_sandbox(proxy_harness)
    head = (
        "POST / HTTP/1.1\r\nHost: api.allowed.test\r\nContent-Length: 9000000\r\n"
        "Connection: close\r\n\r\n"
    )
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        # cut before the body is read: the proxy never buffers what it would refuse
        await https_request(sbx.socket_path, "api.allowed.test", mitm(proxy_harness), head.encode())
    assert seen("api.allowed.test") == []


@pytest.mark.parametrize("split", [0, 10, 20])
async def test_chunked_body_with_a_foreign_placeholder_is_not_forwarded(
    proxy_harness: ProxyHarness,
    split: int,
    seen,  # type: ignore[no-untyped-def]
) -> None:
    """A chunked body carrying a foreign placeholder (split across chunks): 403, the placeholder
    never leaves."""
    sbx = await secret_sandbox(proxy_harness)
    ph = sbx.placeholders["API_KEY"]  # for api.allowed.test, sent to other.allowed.test
    body = f"token={ph}&x=1".encode()
    chunks = [body[:split], body[split:]] if split else [body]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c) + b"0\r\n\r\n"
    request = (
        b"POST /upload HTTP/1.1\r\nHost: other.allowed.test\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n" + chunked
    )
    reply = await https_request(sbx.socket_path, "other.allowed.test", mitm(proxy_harness), request)
    assert (reply.status, reply.headers["x-egress-deny"]) == (403, "placeholder")
    for record in seen("other.allowed.test"):
        assert ph not in record["body"]
