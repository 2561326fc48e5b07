"""Ports, in-process: a bad port is 400 and another owner's container 404 on every method
(nothing reaches a sandbox); with the real agent run as a host process standing in for the
sandbox's, a server that accepts but never answers is a 504 after ports.response_timeout_s,
and while its relay is open the container's relay cap answers 429 and the metrics count it;
a relayed WebSocket is closed (1001) at the daemon's shutdown, never holding the drain."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import aiohttp
import httpx2
import pytest
from aiohttp import web

from tests.apifixtures import assert_error
from tests.service.conftest import InProcessDaemon
from tests.service.test_processes import host_agent

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"ports.max_relays": 1, "ports.response_timeout_s": 1.0}


@pytest.mark.parametrize("port", ["0", "65536", "x", "8o", "123456", "+80"])
def test_a_bad_port_is_400(raw: httpx2.Client, container: str, port: str) -> None:
    for method in METHODS:
        r = raw.request(method, f"/v1/containers/{container}/ports/{port}/a?b=c")
        if method == "HEAD":
            assert r.status_code == 400
        else:
            assert_error(r, 400, "port")


def test_another_owners_container_is_404(daemon: InProcessDaemon, tcp: httpx2.Client) -> None:
    alice = {"Authorization": f"Bearer {daemon.keys['alice']}"}
    bob = {"Authorization": f"Bearer {daemon.keys['bob']}"}
    cid = tcp.post("/v1/containers", json={"name": "alice's"}, headers=alice).json()["id"]
    for method in METHODS:
        for port in ("8000", "0"):
            r = tcp.request(method, f"/v1/containers/{cid}/ports/{port}/", headers=bob)
            if method == "HEAD":
                assert r.status_code == 404
            else:
                assert_error(r, 404, "container_id")


def test_a_silent_server_is_504_and_the_relay_cap_429(
    daemon: InProcessDaemon, raw: httpx2.Client, container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Connects complete from the listen backlog: accepted, never answered.
    with socket.socket() as silent, host_agent(daemon, container, monkeypatch):
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        url = f"/v1/containers/{container}/ports/{port}/slow"
        first: list[httpx2.Response] = []
        waiting = threading.Thread(target=lambda: first.append(raw.get(url)))
        waiting.start()
        try:
            for _ in range(100):
                if "sandboxd_port_relays_open 1.0" in raw.get("/metrics").text:
                    break
                threading.Event().wait(0.01)
            else:
                pytest.fail("the first relay never opened")
            err = assert_error(raw.post(url, content=b"x"), 429, "port", "too_many_relays")
            assert "already relays 1 requests" in err["message"]
        finally:
            waiting.join(10)
        assert_error(first[0], 504, None, "port_timeout")
        metrics = raw.get("/metrics").text
        assert "sandboxd_port_relays_open 0.0" in metrics
        assert "sandboxd_port_relays_total 1.0" in metrics  # a refused one is not relayed


def test_shutdown_closes_a_relayed_websocket_with_1001_at_once(
    daemon: InProcessDaemon, raw: httpx2.Client, container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relayed WebSocket has no end of its own: it must not hold the drain."""
    seen: dict[str, Any] = {}
    echoed = threading.Event()
    serving = threading.Event()
    server_closed = threading.Event()

    async def server() -> None:
        async def echo(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for msg in ws:
                await ws.send_str(msg.data)
            server_closed.set()
            return ws

        app = web.Application()
        app.router.add_get("/ws", echo)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        seen["port"] = runner.addresses[0][1]
        serving.set()
        await asyncio.to_thread(server_closed.wait, 30)
        await runner.cleanup()

    async def caller() -> None:
        url = f"http://localhost/v1/containers/{container}/ports/{seen['port']}/ws"
        connector = aiohttp.UnixConnector(path=daemon.socket)
        async with aiohttp.ClientSession(connector=connector) as s, s.ws_connect(url) as ws:
            await ws.send_str("hi")
            assert (await ws.receive(timeout=10)).data == "hi"
            echoed.set()
            msg = await ws.receive(timeout=30)
            seen["closed"] = (msg.type, ws.close_code, time.monotonic())

    with host_agent(daemon, container, monkeypatch):
        server_thread = threading.Thread(target=lambda: asyncio.run(server()))
        server_thread.start()
        assert serving.wait(10)
        caller_thread = threading.Thread(target=lambda: asyncio.run(caller()))
        caller_thread.start()
        assert echoed.wait(15), "no echo through the relay"
        stopping = time.monotonic()
        daemon.restart()
        caller_thread.join(15)
        kind, code, at = seen["closed"]
        assert (kind, code) == (aiohttp.WSMsgType.CLOSE, 1001)
        assert at - stopping < daemon.config.server.drain_timeout_s / 2
        assert server_closed.wait(10), "the server in the container was not told"
        server_thread.join(10)
