"""Loopback TLS upstreams for the proxy benchmark and the egress tests: a throwaway CA and
aiohttp echo servers (here, in bench/, so that the benchmark needs nothing from tests/).

Each upstream listens on its own loopback address, port 443 (the tests run in a private
network namespace, where that is ours to bind), presents a certificate for its names signed
by a CA made for this test session, and answers every request with JSON describing exactly
what reached it: method, path, query, headers, body, TLS SNI and the HTTP version. It also
counts TLS handshakes (so a test can assert that nothing at all connected) and, on `/ws`,
speaks WebSocket: every message it receives is recorded and echoed back.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_SNI: dict[int, str | None] = {}  # id(SSLObject) -> the SNI its ClientHello named


@dataclass
class ThrowawayCA:
    directory: Path
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def __post_init__(self) -> None:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "egress test CA")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = self.directory / "test-ca.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, names: Sequence[str], stem: str) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        cert_path, key_path = self.directory / f"{stem}.crt", self.directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path


@dataclass
class Upstream:
    address: str
    names: tuple[str, ...]
    port: int = 443
    requests: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # path -> (type, body)
    handshakes: int = 0  # TLS ClientHellos received (any connection at all)
    ws_messages: list[str | bytes] = field(default_factory=list)  # received on /ws

    def clear(self) -> None:
        self.requests.clear()
        self.ws_messages.clear()
        self.handshakes = 0


class Upstreams:
    """Echo servers on a thread of their own (so a test's event loop can block freely)."""

    def __init__(self, ca: ThrowawayCA) -> None:
        self.ca = ca
        self.servers: dict[str, Upstream] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runners: list[web.AppRunner] = []

    def start(self) -> None:
        self._thread.start()

    def add(
        self, address: str, names: Sequence[str], *, port: int = 443, redirect_to: str = ""
    ) -> Upstream:
        upstream = Upstream(address, tuple(names), port)
        cert, key = self.ca.issue(list(names), f"up-{address}-{port}")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["http/1.1"])

        def on_hello(obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            _SNI[id(obj)] = name
            upstream.handshakes += 1

        ctx.sni_callback = on_hello  # type: ignore[assignment]
        fut = asyncio.run_coroutine_threadsafe(self._serve(upstream, ctx, redirect_to), self._loop)
        fut.result(10)
        for name in names:
            self.servers[name] = upstream
        return upstream

    async def _serve(self, upstream: Upstream, ctx: ssl.SSLContext, redirect_to: str) -> None:
        async def echo(request: web.Request) -> web.StreamResponse:
            upstream.requests.append(record := await _describe(request))
            if request.path in upstream.files:
                content_type, body = upstream.files[request.path]
                return web.Response(body=body, content_type=content_type)
            if redirect_to and request.path == "/redirect":
                raise web.HTTPFound(redirect_to)
            if request.path == "/echo-auth":
                # Echo endpoint: the credential comes back in a header and in the body.
                auth = request.headers.get("Authorization", "")
                return web.Response(text=f"you sent {auth}", headers={"X-Echo": auth})
            return web.json_response(record)

        async def websocket(request: web.Request) -> web.StreamResponse:
            upstream.requests.append(await _describe(request))
            ws = web.WebSocketResponse(max_msg_size=64 << 20)
            await ws.prepare(request)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT and msg.data == "authorization?":
                    await ws.send_str(request.headers.get("Authorization", ""))  # an echo
                elif msg.type == WSMsgType.TEXT:
                    upstream.ws_messages.append(msg.data)
                    await ws.send_str("echo:" + msg.data)
                elif msg.type == WSMsgType.BINARY:
                    upstream.ws_messages.append(msg.data)
                    await ws.send_bytes(b"echo:" + msg.data)
            return ws

        app = web.Application(client_max_size=64 << 20)
        app.router.add_get("/ws", websocket)
        app.router.add_route("*", "/{tail:.*}", echo)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, upstream.address, upstream.port, ssl_context=ctx)
        await site.start()
        self._runners.append(runner)

    def stop(self) -> None:
        async def cleanup() -> None:
            for runner in self._runners:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


async def _describe(request: web.Request) -> dict[str, Any]:
    ssl_obj = request.transport.get_extra_info("ssl_object") if request.transport else None
    return {
        "method": request.method,
        "path": request.path,
        "query": request.query_string,
        "headers": [[k, v] for k, v in request.headers.items()],
        "body": (await request.read()).decode("latin-1"),
        "sni": _SNI.get(id(ssl_obj)) if ssl_obj is not None else None,
        "version": f"{request.version.major}.{request.version.minor}",
    }


def is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


def header(record: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in record["headers"] if k.lower() == name.lower()]


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record)
