"""A hostile API client: other owners, no key, oversized and slow requests, and fuzzing
against our OpenAPI document. No 5xx, no hang, no state change on a rejected request."""

from __future__ import annotations

import base64
import io
import json
import socket
import stat
import statistics
import time
import zipfile
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import httpx2
import pytest

from tests.api.conftest import DaemonHandle

pytestmark = pytest.mark.root

SPEC = json.loads(files("daemon").joinpath("openapi.json").read_text())
CONTAINER_ROUTES = [
    (method.upper(), path)
    for path, item in SPEC["paths"].items()
    if path.startswith("/v1/containers/{container_id}")
    for method in item
]
PUBLIC = {"/healthz", "/openapi.json", "/metrics"}


def _url_for(path: str, container_id: str) -> str:
    return (
        path.replace("{container_id}", container_id)
        .replace("{file_id}", "file_0123456789abcdef")
        .replace("{session_id}", "default")
        .replace("{process_id}", "proc_" + "0" * 32)
    )


def _tcp(daemon: DaemonHandle, who: str | None) -> httpx2.Client:
    headers = {} if who is None else {"Authorization": f"Bearer {daemon.keys[who]}"}
    return httpx2.Client(base_url=daemon.tcp_url, headers=headers, timeout=60)


@pytest.fixture
def alice_box(daemon: DaemonHandle) -> Iterator[str]:
    with _tcp(daemon, "alice") as alice:
        r = alice.post("/v1/containers", json={"name": "alice-secret"})
        assert r.status_code == 200, r.text
        cid = r.json()["id"]
        yield cid
        alice.delete(f"/v1/containers/{cid}")


def test_another_owner_gets_404_on_every_container_route(
    daemon: DaemonHandle, alice_box: str
) -> None:
    """Bob tries every route of Alice's container (read, exec, code, files, processes, events,
    delete): each is a 404 that does not even confirm the container exists, and nothing
    changed."""
    bodies: dict[str, dict[str, object]] = {
        "/exec": {"json": {"commands": ["touch /mnt/data/pwned"]}},
        "/code": {"json": {"code": "open('/mnt/data/pwned', 'w')"}},
        "/files": {"files": {"file": ("pwned", b"x")}},
        "/processes": {"json": {"command": "touch /mnt/data/pwned"}},
        "/input": {"json": {"data": "pwned\n"}},
        "/signal": {"json": {"signal": "KILL"}},
        "/resize": {"json": {"cols": 80, "rows": 24}},
    }
    with _tcp(daemon, "bob") as bob, _tcp(daemon, "alice") as alice:
        unknown = "cntr_" + "0" * 48
        for method, path in CONTAINER_ROUTES:
            kw = bodies.get("/" + path.rsplit("/", 1)[1], {}) if method == "POST" else {}
            url = _url_for(path, alice_box)
            r = bob.request(method, url, **kw)  # type: ignore[arg-type]
            assert r.status_code == 404, (method, path, r.text)
            # The same answer as for an id that does not exist at all.
            other = bob.request(method, _url_for(path, unknown), **kw)  # type: ignore[arg-type]
            assert (other.status_code, other.json()["error"]["code"]) == (
                404,
                r.json()["error"]["code"],
            ), (method, path)
        r = alice.get(f"/v1/containers/{alice_box}")
        assert r.json()["status"] == "running"
        r = alice.post(f"/v1/containers/{alice_box}/exec", json={"commands": ["ls -A /mnt/data"]})
        assert r.status_code == 200
        assert "pwned" not in r.text


def test_no_key_no_access_on_tcp(daemon: DaemonHandle, alice_box: str) -> None:
    """Every non-public route answers 401 without a valid key, whatever the method."""
    keys: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic YWxpY2U6eA=="},
        {"Authorization": "Bearer " + daemon.keys["alice"][:-1]},
        {"Authorization": "bearer  " + daemon.keys["alice"]},
    ]
    with httpx2.Client(base_url=daemon.tcp_url, timeout=30) as anon:
        for path, item in SPEC["paths"].items():
            if path in PUBLIC:
                continue
            for method in item:
                for headers in keys:
                    r = anon.request(method.upper(), _url_for(path, alice_box), headers=headers)
                    assert r.status_code == 401, (method, path, headers, r.text)
                    assert r.json()["error"]["code"] == "invalid_api_key"
        for path in PUBLIC:
            assert anon.get(path).status_code == 200, path


def _send_raw(connect: socket.socket, data: bytes, timeout: float = 10) -> bytes:
    connect.settimeout(timeout)
    connect.sendall(data)
    reply = b""
    while chunk := connect.recv(65536):
        reply += chunk
        if b"\r\n\r\n" in reply:
            break
    return reply


def _sockets(daemon: DaemonHandle) -> list[tuple[str, socket.socket]]:
    unix = socket.socket(socket.AF_UNIX)
    unix.connect(daemon.socket)
    host, port = daemon.tcp_url.removeprefix("http://").split(":")
    return [("unix", unix), ("tcp", socket.create_connection((host, int(port))))]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        pytest.param(b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400, id="url"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 100_000 + b"\r\n\r\n", 400, id="hdr"),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(2000))
            + b"\r\n", 400, id="many-headers"
        ),
        pytest.param(
            b"POST /v1/containers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000000\r\n\r\n{", 413, id="declared-10GB"
        ),
    ],
)  # fmt: skip
def test_oversized_requests_are_refused(
    daemon: DaemonHandle, request_bytes: bytes, status: int
) -> None:
    replies = {}
    conns = _sockets(daemon)
    try:
        for name, conn in conns:
            # TCP gets a valid key, so the size is what is refused.
            auth = b"Authorization: Bearer %s\r\n" % daemon.keys["alice"].encode()
            data = (
                request_bytes.replace(b"\r\n", b"\r\n" + auth, 1)
                if name == "tcp"
                else request_bytes
            )
            replies[name] = _send_raw(conn, data)[:300]
    finally:
        for _, conn in conns:
            conn.close()
    for name, reply in replies.items():
        assert reply.split(b"\r\n", 1)[0].split(b" ", 2)[1] == b"%d" % status, (name, reply)


def test_oversized_chunked_body_is_refused(raw: httpx2.Client) -> None:
    def body() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(64):
            yield b"a" * 65536
        yield b'"}'

    before = len(raw.get("/v1/containers?limit=100").json()["data"])
    r = raw.post("/v1/containers", content=body(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"
    assert len(raw.get("/v1/containers?limit=100").json()["data"]) == before


def _health_latencies(daemon: DaemonHandle, n: int) -> list[float]:
    latencies = []
    with httpx2.Client(
        transport=httpx2.HTTPTransport(uds=daemon.socket), base_url="http://x", timeout=10
    ) as c:
        for _ in range(n):
            started = time.monotonic()
            assert c.get("/healthz").status_code == 200
            latencies.append(time.monotonic() - started)
    return latencies


def test_slowloris_does_not_starve_the_api(daemon: DaemonHandle) -> None:
    """200 connections (unix and TCP) that send a request line and then trickle headers:
    health checks keep answering in well under a second."""
    conns = []
    try:
        for _ in range(100):
            for _name, conn in _sockets(daemon):
                conn.sendall(b"POST /v1/containers HTTP/1.1\r\nHost: x\r\n")
                conns.append(conn)
        latencies = []
        for round_ in range(5):
            for conn in conns:
                conn.sendall(b"X-%d: y\r\n" % round_)
            latencies += _health_latencies(daemon, 20)
        p99 = statistics.quantiles(latencies, n=100)[98]
        print(f"slowloris: {len(conns)} stalled connections, health p99 {p99 * 1000:.1f} ms")
        assert p99 < 0.5, p99
    finally:
        for conn in conns:
            conn.close()


def _zip(entries: dict[str, bytes], links: dict[str, str] | None = None) -> str:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, target)
    return base64.b64encode(buf.getvalue()).decode()


SKILL_MD = b"---\nname: evil\ndescription: Zip-slip.\n---\nbody\n"


@pytest.mark.parametrize(
    ("entries", "links"),
    [
        pytest.param({"x/SKILL.md": SKILL_MD, "x/../../../../tmp/zs-evil": b"x"}, {}, id="dotdot"),
        pytest.param({"x/SKILL.md": SKILL_MD, "/tmp/zs-evil": b"x"}, {}, id="absolute"),
        pytest.param({"x/SKILL.md": SKILL_MD}, {"x/etc": "/etc"}, id="symlink-abs"),
        pytest.param({"x/SKILL.md": SKILL_MD}, {"x/up": "../../.."}, id="symlink-rel"),
    ],
)  # fmt: skip
def test_zip_slip_through_inline_skills(
    raw: httpx2.Client, daemon: DaemonHandle, entries: dict[str, bytes], links: dict[str, str]
) -> None:
    """An inline skill zip whose entries leave the skill folder is a 400 naming the field;
    no container is created and nothing is written outside."""
    before = len(raw.get("/v1/containers?limit=100").json()["data"])
    skill = {
        "type": "inline",
        "name": "evil",
        "description": "Zip-slip.",
        "source": {"type": "base64", "media_type": "application/zip", "data": _zip(entries, links)},
    }
    r = raw.post("/v1/containers", json={"name": "zip-slip", "skills": [skill]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "skills[0].source.data"
    assert len(raw.get("/v1/containers?limit=100").json()["data"]) == before
    assert not Path("/tmp/zs-evil").exists()
    assert list(daemon.root.rglob("zs-evil")) == []
