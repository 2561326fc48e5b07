"""`sandboxd port-forward` run for real against a real daemon (runc sandboxes; docker too):
a local listener whose requests reach servers inside a container through the ports route —
http.server's listing, bodies both ways (by length and chunked, one of a few MB) on one
kept-alive connection, a WebSocket echo, over the unix socket and over TCP with a key; and
Ctrl-C stops it."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx2
import pytest

from tests.api.conftest import DaemonHandle, exec_
from tests.api.test_ports import ECHO, WS_ECHO, start, wait_listening

pytestmark = pytest.mark.root
SANDBOXD = str(Path(sys.executable).parent / "sandboxd")


@dataclass(frozen=True)
class Served:
    cid: str
    tcp: bool  # made by alice over TCP (else over the unix socket): reach it the same way


@pytest.fixture
def served(daemon: DaemonHandle, request: pytest.FixtureRequest) -> Iterator[Served]:
    """A container with http.server on 8000 (serving /mnt/data), the echo on 8001 and the
    WebSocket echo on 8003; made over the unix socket, or over TCP (param "tcp")."""
    tcp = getattr(request, "param", "unix") == "tcp"
    if tcp:
        auth = {"Authorization": f"Bearer {daemon.keys['alice']}"}
        raw = httpx2.Client(base_url=daemon.tcp_url, headers=auth, timeout=60)
    else:
        transport = httpx2.HTTPTransport(uds=daemon.socket)
        raw = httpx2.Client(transport=transport, base_url="http://localhost", timeout=60)
    with raw:
        yield from _served(raw, tcp)


def _served(raw: httpx2.Client, tcp: bool) -> Iterator[Served]:
    r = raw.post("/v1/containers", json={"name": "forward"})
    assert r.status_code == 200, r.text
    cid = str(r.json()["id"])
    try:
        exec_(raw, cid, f"cat > /mnt/data/echo.py <<'EOF'\n{ECHO}\nEOF")
        exec_(raw, cid, f"cat > /mnt/data/ws.py <<'EOF'\n{WS_ECHO}\nEOF")
        start(raw, cid, "exec python3 -m http.server 8000 --bind 127.0.0.1")
        start(raw, cid, "exec python3 /mnt/data/echo.py 8001")
        start(raw, cid, "exec python3 /mnt/data/ws.py 8003")
        for port in (8000, 8001):  # (a plain GET would hang the WebSocket echo)
            wait_listening(raw, cid, port)
        yield Served(cid, tcp)
    finally:
        raw.delete(f"/v1/containers/{cid}")


class Forward:
    """A running `sandboxd port-forward`, its local URL read from its first line."""

    def __init__(self, daemon: DaemonHandle, served: Served, spec: str) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
        if served.tcp:
            env |= {"SANDBOXD_URL": daemon.tcp_url, "SANDBOXD_API_KEY": daemon.keys["alice"]}
        else:
            env["SANDBOXD_SOCKET"] = daemon.socket
        self.proc = subprocess.Popen(
            [SANDBOXD, "port-forward", served.cid, spec], env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), self.stop()
        self.port = int(urllib.parse.urlsplit(self.url).port or 0)

    def stop(self) -> tuple[int, str]:
        """Ctrl-C; its exit code and stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=10)
        return self.proc.returncode, err


@pytest.mark.parametrize("served", ["unix", "tcp"], indirect=True)
def test_a_listing_and_bodies_through_a_kept_alive_connection(
    daemon: DaemonHandle, served: Served, tmp_path: Path
) -> None:
    listing = Forward(daemon, served, "0:8000")
    echo = Forward(daemon, served, "0:8001")
    try:
        r = httpx2.get(listing.url, timeout=30)
        assert r.status_code == 200 and "echo.py" in r.text and "ws.py" in r.text, r.text
        assert r.headers["x-sandboxd-port"] == "8000"

        conn = http.client.HTTPConnection("127.0.0.1", echo.port, timeout=30)
        conn.request("POST", "/a%20b?x=1", body=b"hello", headers={"X-Custom": "yes"})
        first = conn.getresponse()
        assert (first.status, first.read()) == (201, b"hello")
        assert first.getheader("X-Seen-Path") == "/a%20b?x=1"
        assert first.getheader("X-Seen-Custom") == "yes"
        assert first.getheader("X-Seen-Host") == "127.0.0.1:8001"
        sock = conn.sock
        big = os.urandom(3 << 20)
        conn.request("POST", "/big", body=iter([big[: 1 << 20], big[1 << 20 :]]),
                     encode_chunked=True)  # fmt: skip
        second = conn.getresponse()
        assert second.getheader("X-Seen-Chunked") == "chunked"
        assert (second.status, second.read() == big) == (201, True)
        assert conn.sock is sock, "the connection was not kept alive"
        conn.close()

        body = tmp_path / "body"
        body.write_bytes(os.urandom(200_000))
        curl = subprocess.run(
            ["curl", "-sS", "-H", "Expect: 100-continue", "--data-binary", f"@{body}",
             "-o", str(tmp_path / "echoed"), "-w", "%{http_code}", f"{echo.url}curl"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert curl.stdout == "201", curl.stderr
        assert (tmp_path / "echoed").read_bytes() == body.read_bytes()
        head = httpx2.head(listing.url, timeout=30)
        assert head.status_code == 200 and int(head.headers["content-length"]) > 0
        assert head.content == b""
    finally:
        codes = [listing.stop(), echo.stop()]
    assert [code for code, _ in codes] == [0, 0], codes
    with pytest.raises(httpx2.ConnectError):  # stopped: nothing listens there any more
        httpx2.get(listing.url, timeout=5)


@pytest.mark.parametrize("served", ["tcp"], indirect=True)
def test_a_websocket_through_the_forward(daemon: DaemonHandle, served: Served) -> None:
    forward = Forward(daemon, served, "0:8003")
    try:

        async def chat() -> None:
            async with aiohttp.ClientSession() as session:
                ws_url = forward.url.replace("http:", "ws:") + "chat?room=1"
                deadline = time.monotonic() + 20
                while True:  # 502 until the echo listens
                    try:
                        ws = await session.ws_connect(ws_url, protocols=("chat",))
                        break
                    except aiohttp.WSServerHandshakeError as exc:
                        status = exc.status
                    assert status == 502 and time.monotonic() < deadline, status
                    await asyncio.sleep(0.1)
                async with ws:
                    assert ws.protocol == "chat"
                    await ws.send_str("hello, sandbox")
                    assert await ws.receive_str(timeout=10) == "HELLO, SANDBOX"
                    big = bytes(range(256)) * 400
                    await ws.send_bytes(big)
                    assert await ws.receive_bytes(timeout=10) == big[::-1]
                    await ws.close()
                assert ws.close_code == 1000

        asyncio.run(chat())
        asyncio.run(chat())  # the forward goes on after a socket closed
    finally:
        code, err = forward.stop()
    assert code == 0, err


def test_the_daemons_refusals_reach_the_local_client(daemon: DaemonHandle, served: Served) -> None:
    forward = Forward(daemon, served, "0:8009")  # nothing listens on 8009 inside
    try:
        r = httpx2.get(forward.url, timeout=30)
        assert r.status_code == 502 and r.json()["error"]["code"] == "port_unreachable"
        assert "x-sandboxd-port" not in r.headers
    finally:
        code, err = forward.stop()
    assert code == 0, err


@pytest.mark.parametrize("served", ["unix"], indirect=True)
def test_a_dot_dot_path_never_leaves_the_ports_route(daemon: DaemonHandle, served: Served) -> None:
    """HTTP stacks resolve `..`: relayed as is, `/../../../..` would reach the API's other
    routes with the forwarding user's credentials (list, exec, delete their containers)."""
    forward = Forward(daemon, served, "0:8000")
    targets = [
        "/../../../../containers?limit=5",
        "/%2e%2e/%2E%2E/%2e%2e/%2e%2e/containers",
        "/a/../../../../../v1/containers",
        "/./x",
    ]
    try:
        for target in targets:
            for extra in ("", "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          "Sec-WebSocket-Version: 13\r\n"):  # fmt: skip
                with socket.create_connection(("127.0.0.1", forward.port), timeout=10) as s:
                    s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
                    head = s.recv(4096).decode(errors="replace")
                assert head.startswith("HTTP/1.1 400"), (target, head[:300])
                assert "cntr_" not in head
        ok = httpx2.get(forward.url + "/a/..b/", timeout=30)  # `..b` is a name, not `..`
        assert ok.status_code == 404 and ok.headers["x-sandboxd-port"] == "8000"
    finally:
        code, err = forward.stop()
    assert code == 0, err


def test_bad_specs_and_unknown_containers_are_refused(daemon: DaemonHandle) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SANDBOXD_SOCKET": daemon.socket}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SANDBOXD, "port-forward", *args], env=env, capture_output=True, text=True,
            timeout=30, check=False,
        )  # fmt: skip

    assert "LOCAL" in run("cntr_x", "80:http").stderr
    assert run("cntr_x", "70000").returncode == 1
    missing = run("no-such-container", "8000")
    assert missing.returncode == 1 and "No container" in missing.stderr
