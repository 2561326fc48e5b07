"""Egress tests: the real proxy process, loopback TLS upstreams, a private network namespace.

These tests must run in a network namespace of their own (`scripts/test` runs them under
`unshare --net` with `lo` up), so a wrong dial can only fail: upstreams bind 127.0.0.x:443,
test names (`*.test`) reach them only through the proxy's `hosts` diagnostics map, and the
only non-global addresses it may dial are the `allow_upstreams` pairs listed here.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bench.upstream import ThrowawayCA, Upstreams
from daemon.egress_proxy import EgressProxy, ProxySettings
from daemon.metrics import Metrics
from daemon.tasks import TaskSupervisor
from proxy.options import Limits
from proxy.secrets import PLACEHOLDER_BODY, PLACEHOLDER_PREFIX

# name -> loopback address of its upstream (all on port 443)
HOSTS = {
    "api.allowed.test": "127.0.0.2",
    "other.allowed.test": "127.0.0.3",
    "evil.test": "127.0.0.4",
    "a.b.wild.test": "127.0.0.5",
    "wild.test": "127.0.0.5",
    "evilwild.test": "127.0.0.5",
    "rebind.allowed.test": "127.0.0.6",
    "index.allowed.test": "127.0.0.7",
}
# names that resolve to addresses the proxy must refuse (no upstream behind them)
PRIVATE_HOSTS = {
    "loop.allowed.test": ["127.0.0.9"],
    "ten.allowed.test": ["10.0.0.1"],
    "cgnat.allowed.test": ["100.64.0.1"],
    "meta.allowed.test": ["169.254.169.254"],
    "v6loop.allowed.test": ["::1"],
    "mapped.allowed.test": ["::ffff:127.0.0.1"],
}


def in_private_netns() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if in_private_netns() or not items:
        return
    why = "egress tests run only in a private network namespace (scripts/test: unshare --net)"
    for item in items:
        if "tests/egress/" in str(item.fspath):
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(scope="session")
def egress_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sbxd-eg-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def test_ca(egress_dir: Path) -> ThrowawayCA:
    ca_dir = egress_dir / "ca"
    ca_dir.mkdir(mode=0o755)
    return ThrowawayCA(ca_dir)


@pytest.fixture(scope="session")
def upstreams(test_ca: ThrowawayCA) -> Iterator[Upstreams]:
    ups = Upstreams(test_ca)
    ups.start()
    by_address: dict[str, list[str]] = {}
    for name, address in HOSTS.items():
        by_address.setdefault(address, []).append(name)
    for address, names in by_address.items():
        redirect = "https://evil.test/landing" if "api.allowed.test" in names else ""
        ups.add(address, names, redirect_to=redirect)
    yield ups
    ups.stop()


def proxy_settings(base: Path, test_ca: ThrowawayCA, **overrides: Any) -> ProxySettings:
    hosts: dict[str, list[str]] = {name: [addr] for name, addr in HOSTS.items()}
    hosts.update(PRIVATE_HOSTS)
    # Rebinding: the first answer is "public" (allowed by allow_upstreams), then loopback.
    hosts["rebind.allowed.test"] = ["127.0.0.6", "127.0.0.1"]
    allow = tuple(sorted({(addr, 443) for addr in HOSTS.values()}))
    values: dict[str, Any] = {
        "state_dir": base / "proxy",
        "hosts": hosts,
        "allow_upstreams": allow,
        "upstream_ca_bundle": str(test_ca.cert_path),
        "limits": Limits(header_timeout_s=2.0, max_connections=64),
        "health_interval_s": 0.5,
    }
    values.update(overrides)
    return ProxySettings(**values)


@dataclass
class ProxyHarness:
    proxy: EgressProxy
    metrics: Metrics
    base: Path

    async def sandbox(
        self,
        domains: list[str],
        secrets_: list[dict[str, str]] | None = None,
    ) -> FakeSandbox:
        """A sandbox as the proxy sees it: a private egress dir with a socket and a policy."""
        sid = "cntr_" + secrets.token_hex(8)
        directory = self.base / sid
        directory.mkdir(mode=0o700)
        placeholders = []
        for s in secrets_ or []:
            ph = PLACEHOLDER_PREFIX + "".join(
                secrets.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(PLACEHOLDER_BODY)
            )
            placeholders.append({**s, "placeholder": ph})
        policy = {"type": "allowlist", "allowed_domains": domains}
        await self.proxy.attach(sid, directory, policy, placeholders)
        return FakeSandbox(
            sid, directory / "proxy.sock", {p["name"]: p["placeholder"] for p in placeholders}
        )


@dataclass
class FakeSandbox:
    sandbox_id: str
    socket_path: Path
    placeholders: dict[str, str]


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def proxy_harness(
    egress_dir: Path, test_ca: ThrowawayCA, upstreams: Upstreams
) -> AsyncIterator[ProxyHarness]:
    base = Path(tempfile.mkdtemp(prefix="px-", dir=egress_dir))
    base.chmod(0o755)
    metrics = Metrics("oci")
    tasks = TaskSupervisor()
    proxy = EgressProxy(proxy_settings(base, test_ca), metrics, tasks)
    await proxy.start()
    try:
        yield ProxyHarness(proxy, metrics, base)
    finally:
        await tasks.close(5)
        await proxy.close()
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------- client side


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    body = b""
    if "content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readline()).strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                break
            body += await reader.readexactly(size)
            await reader.readline()
    return Reply(status, headers, body)


def client_tls(test_ca: ThrowawayCA | None = None, proxy_ca: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cafile=str(test_ca.cert_path)) if test_ca else None
    if proxy_ca is not None:
        ctx.load_verify_locations(cafile=str(proxy_ca))
    return ctx


async def connect(
    sock_path: Path, authority: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Reply]:
    reader, writer = await asyncio.open_unix_connection(str(sock_path))
    writer.write(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
    await writer.drain()
    reply = await read_reply(reader)
    return reader, writer, reply


async def https_request(
    sock_path: Path,
    host: str,
    ctx: ssl.SSLContext,
    request: bytes | None = None,
    *,
    sni: str | None = None,
    authority: str | None = None,
) -> Reply:
    """CONNECT, TLS (with `sni`), one HTTP/1.1 request; the reply (or the CONNECT's refusal)."""
    reader, writer, reply = await connect(sock_path, authority or f"{host}:443")
    try:
        if reply.status != 200:
            return reply
        # sni=None: the host; sni="": no SNI at all
        await writer.start_tls(ctx, server_hostname=host if sni is None else (sni or None))
        writer.write(
            request or f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        return await read_reply(reader)
    finally:
        writer.close()
