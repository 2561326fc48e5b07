"""Ports, in-process: a bad port is 400 and another owner's container 404 on every method
(nothing reaches a sandbox); with the real agent run as a host process standing in for the
sandbox's, a server that accepts but never answers is a 504 after ports.response_timeout_s,
and while its relay is open the container's relay cap answers 429 and the metrics count it."""

from __future__ import annotations

import socket
import threading
from typing import Any

import httpx2
import pytest

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
