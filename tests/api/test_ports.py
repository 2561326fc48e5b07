"""Ports through the API, in real sandboxes: a server started as a background process is
reached at /v1/containers/{id}/ports/{port}/{path} (a directory listing, a body echoed with
the request's path and query, a response of a few MB streamed whole), a closed port is a 502
in our error shape, a bad port 400, and another owner's request 404."""

from __future__ import annotations

import asyncio
import hashlib
import time

import aiohttp
import httpx2
import pytest

from tests.api.conftest import DaemonHandle, exec_

pytestmark = pytest.mark.root

# A tiny HTTP/1.1 echo server: the body back (Content-Length or chunked), and what it saw of
# the request in X-Seen-* headers.
ECHO = r"""
import http.server, sys
class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if not size:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Seen-Path", self.path)
        self.send_header("X-Seen-Host", self.headers.get("Host", ""))
        self.send_header("X-Seen-Auth", self.headers.get("Authorization", "none"))
        self.send_header("X-Seen-Custom", self.headers.get("X-Custom", ""))
        self.send_header("X-Seen-Chunked", self.headers.get("Transfer-Encoding", ""))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
"""


# A WebSocket server of the standard library's bits: text comes back upper-cased in two
# fragments, binary reversed, a ping is sent before each answer, close is echoed.
WS_ECHO = r"""
import base64, hashlib, socket, struct, sys, threading
def frame(op, data, fin=True):
    n = len(data)
    head = bytes([(0x80 if fin else 0) | op])
    if n < 126: head += bytes([n])
    elif n < 65536: head += bytes([126]) + struct.pack("!H", n)
    else: head += bytes([127]) + struct.pack("!Q", n)
    return head + data
def serve(c):
    f = c.makefile("rb")
    f.readline()
    headers = {}
    while True:
        line = f.readline().strip()
        if not line: break
        k, v = line.split(b":", 1)
        headers[k.strip().lower()] = v.strip()
    key = headers[b"sec-websocket-key"]
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    reply = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    reply += b"Sec-WebSocket-Accept: " + accept + b"\r\n"
    proto = headers.get(b"sec-websocket-protocol", b"").split(b",")[0].strip()
    if proto: reply += b"Sec-WebSocket-Protocol: " + proto + b"\r\n"
    c.sendall(reply + b"\r\n")
    while True:
        b0, b1 = f.read(2)
        n = b1 & 127
        if n == 126: n = struct.unpack("!H", f.read(2))[0]
        elif n == 127: n = struct.unpack("!Q", f.read(8))[0]
        mask = f.read(4)
        raw = f.read(n)
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
        data = (int.from_bytes(raw, "big") ^ key).to_bytes(n, "big")
        op = b0 & 15
        if op == 8:
            c.sendall(frame(8, data))
            break
        if op == 10: continue
        c.sendall(frame(9, b"are you there"))
        if op == 1:
            out = data.upper()
            c.sendall(frame(1, out[:2], fin=False) + frame(0, out[2:]))
        elif op == 2:
            c.sendall(frame(2, data[::-1]))
    c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def start(raw: httpx2.Client, cid: str, command: str) -> None:
    r = raw.post(f"/v1/containers/{cid}/processes", json={"command": command})
    assert r.status_code == 200, r.text


def wait_listening(raw: httpx2.Client, cid: str, port: int) -> None:
    """Until the port answers through the route (502 while nothing listens yet)."""
    deadline = time.monotonic() + 20
    while (r := raw.get(f"/v1/containers/{cid}/ports/{port}/")).status_code == 502:
        assert time.monotonic() < deadline, f"port {port} never listened: {r.text}"
        time.sleep(0.1)


@pytest.fixture
def served(raw: httpx2.Client, container: str) -> str:
    """The container with http.server on 8000 (serving /mnt/data) and the echo on 8001."""
    exec_(raw, container, f"cat > /mnt/data/echo.py <<'EOF'\n{ECHO}\nEOF")
    start(raw, container, "exec python3 -m http.server 8000 --bind 127.0.0.1")
    start(raw, container, "exec python3 /mnt/data/echo.py 8001")
    wait_listening(raw, container, 8000)
    wait_listening(raw, container, 8001)
    return container


def test_a_servers_directory_listing_through_the_route(raw: httpx2.Client, served: str) -> None:
    r = raw.get(f"/v1/containers/{served}/ports/8000/")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert "Directory listing for /" in r.text and "echo.py" in r.text
    assert r.headers["x-request-id"].startswith("req_")
    assert r.headers["x-sandboxd-port"] == "8000"  # the server's answer, not the daemon's
    head = raw.head(f"/v1/containers/{served}/ports/8000/echo.py")
    assert head.status_code == 200 and head.content == b""
    whole = raw.get(f"/v1/containers/{served}/ports/8000/echo.py")
    assert int(head.headers["content-length"]) == len(whole.content) > 0


def test_a_body_is_echoed_with_path_query_and_host(raw: httpx2.Client, served: str) -> None:
    body = b"hello \x00\xff" * 1000
    r = raw.post(
        f"/v1/containers/{served}/ports/8001/a/b%20c?q=1&r=x%2Fy",
        content=body,
        headers={"X-Custom": "kept", "Connection": "keep-alive, X-Custom"},
    )
    assert r.status_code == 201, r.text
    assert r.content == body
    assert r.headers["x-seen-path"] == "/a/b%20c?q=1&r=x%2Fy"
    assert r.headers["x-seen-host"] == "127.0.0.1:8001"
    # Named by Connection: hop-by-hop, not forwarded.
    assert r.headers["x-seen-custom"] == ""
    # A chunked upload is relayed chunked, as it comes.
    chunks = [b"x" * 70000, b"y" * 5, b"z" * 100000]
    r = raw.post(f"/v1/containers/{served}/ports/8001/up", content=iter(chunks))
    assert r.status_code == 201, r.text
    assert r.content == b"".join(chunks)
    assert r.headers["x-seen-chunked"] == "chunked"


def test_our_authorization_never_reaches_the_server(
    daemon: DaemonHandle, raw: httpx2.Client
) -> None:
    alice = httpx2.Client(
        base_url=daemon.tcp_url, headers={"Authorization": f"Bearer {daemon.keys['alice']}"}
    )
    bob = httpx2.Client(
        base_url=daemon.tcp_url, headers={"Authorization": f"Bearer {daemon.keys['bob']}"}
    )
    with alice, bob:
        r = alice.post("/v1/containers", json={"name": "ports-owner"})
        assert r.status_code == 200, r.text
        cid = r.json()["id"]
        try:
            exec_(raw, cid, f"cat > /mnt/data/echo.py <<'EOF'\n{ECHO}\nEOF")
            start(raw, cid, "exec python3 /mnt/data/echo.py 8001")
            wait_listening(raw, cid, 8001)
            r = alice.post(f"/v1/containers/{cid}/ports/8001/", content=b"hi")
            assert r.status_code == 201 and r.content == b"hi", r.text
            assert r.headers["x-seen-auth"] == "none"
            # Another owner: the container does not exist for them, whatever the port.
            for path in ("8001/", "8001/x?y=1", "0/", "99999/"):
                r = bob.get(f"/v1/containers/{cid}/ports/{path}")
                assert r.status_code == 404, r.text
                assert r.json()["error"]["code"] == "not_found"
        finally:
            alice.delete(f"/v1/containers/{cid}")


def test_a_large_response_streams_through(raw: httpx2.Client, served: str) -> None:
    out = exec_(
        raw, served, "head -c 5000000 /dev/urandom > /mnt/data/big.bin && sha256sum big.bin"
    )
    digest = str(out["output"][0]["stdout"]).split()[0]  # type: ignore[index]
    h = hashlib.sha256()
    n = 0
    with raw.stream("GET", f"/v1/containers/{served}/ports/8000/big.bin") as r:
        assert r.status_code == 200
        assert r.headers["content-length"] == "5000000"
        for chunk in r.iter_bytes():
            h.update(chunk)
            n += len(chunk)
    assert (n, h.hexdigest()) == (5_000_000, digest)
    # A client that goes away mid-body ends the relay (and lets go of the container).
    with raw.stream("GET", f"/v1/containers/{served}/ports/8000/big.bin") as r:
        next(r.iter_raw(65536))
    deadline = time.monotonic() + 10
    while "sandboxd_port_relays_open 0.0" not in raw.get("/metrics").text:
        assert time.monotonic() < deadline, "the relay stayed open"
        time.sleep(0.05)


def test_a_closed_port_is_502_in_our_error_shape(raw: httpx2.Client, container: str) -> None:
    r = raw.get(f"/v1/containers/{container}/ports/8002/x")
    assert r.status_code == 502, r.text
    error = r.json()["error"]
    assert (error["code"], error["type"], error["param"]) == (
        "port_unreachable",
        "server_error",
        "port",
    )
    assert "8002" in error["message"]
    assert "x-sandboxd-port" not in r.headers


@pytest.mark.parametrize("port", ["0", "65536", "abc", "-1", "080000"])
def test_a_bad_port_is_400(raw: httpx2.Client, container: str, port: str) -> None:
    r = raw.get(f"/v1/containers/{container}/ports/{port}/")
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "port"


async def test_a_websocket_is_relayed_message_by_message(
    daemon: DaemonHandle, raw: httpx2.Client, container: str
) -> None:
    exec_(raw, container, f"cat > /mnt/data/ws.py <<'EOF'\n{WS_ECHO}\nEOF")
    start(raw, container, "exec python3 /mnt/data/ws.py 8003")
    url = f"http://localhost/v1/containers/{container}/ports/8003/chat?room=1"
    connector = aiohttp.UnixConnector(path=daemon.socket)
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.monotonic() + 20
        while True:
            try:
                ws = await session.ws_connect(url, protocols=("chat", "other"))
                break
            except aiohttp.WSServerHandshakeError as exc:
                status = exc.status
            assert status == 502 and time.monotonic() < deadline, status
            await asyncio.sleep(0.1)
        async with ws:
            assert ws.protocol == "chat"
            await ws.send_str("hello, sandbox")
            assert await ws.receive_str(timeout=10) == "HELLO, SANDBOX"
            big = bytes(range(256)) * 400  # 100 KiB: a 64-bit length
            await ws.send_bytes(big)
            assert await ws.receive_bytes(timeout=10) == big[::-1]
            await ws.close()
        assert ws.close_code == 1000
    deadline = time.monotonic() + 10
    while "sandboxd_port_relays_open 0.0" not in raw.get("/metrics").text:
        assert time.monotonic() < deadline, "the relay stayed open"
        await asyncio.sleep(0.05)
