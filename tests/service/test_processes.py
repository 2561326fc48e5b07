"""Background processes, in-process: request validation and ownership on every route (nothing
reaches a sandbox), and, with the real agent run as a plain host process standing in for the
sandbox's, the watch that keeps a container with a running process from the idle reaper."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from daemon import lifecycle
from sandbox.agent_client import AgentClient, AgentLimits
from sandbox.host.agent import AGENT_SCRIPT
from tests.apifixtures import assert_error
from tests.service.conftest import Clock, InProcessDaemon, wait_for

PID = "proc_" + "0" * 32

BAD_CREATE: list[tuple[Any, str]] = [
    ({}, "command"),
    ({"command": ""}, "command"),
    ({"command": 5}, "command"),
    ({"command": "x" * ((16 << 10) + 1)}, "command"),
    ({"command": "é" * ((8 << 10) + 1)}, "command"),
    ({"command": "echo \u0000"}, "command"),
    ({"command": "true", "env": {"A-B": "x"}}, "env"),
    ({"command": "true", "env": ["A=1"]}, "env"),
    ({"command": "true", "working_directory": "relative"}, "working_directory"),
    ({"command": "true", "tty": "yes"}, "tty"),
    ({"command": "true", "cols": 100}, "cols"),
    ({"command": "true", "tty": False, "rows": 30}, "rows"),
    ({"command": "true", "tty": True, "cols": 0}, "cols"),
    ({"command": "true", "tty": True, "rows": 1001}, "rows"),
    ({"command": "true", "tty": True, "cols": "80"}, "cols"),
]


@pytest.mark.parametrize(("body", "param"), BAD_CREATE)
def test_bad_process_bodies(raw: httpx2.Client, container: str, body: Any, param: str) -> None:
    assert_error(raw.post(f"/v1/containers/{container}/processes", json=body), 400, param)


BAD_OTHER: list[tuple[str, str, Any, str]] = [
    ("POST", "/input", {"data": 5}, "data"),
    ("POST", "/input", {"data": "x" * ((64 << 10) + 1)}, "data"),
    ("POST", "/input", {"data": "x", "eof": "yes"}, "eof"),
    ("POST", "/input", {"what": 1}, "what"),
    ("POST", "/signal", {}, "signal"),
    ("POST", "/signal", {"signal": "STOP"}, "signal"),
    ("POST", "/resize", {"cols": 80}, "rows"),
    ("POST", "/resize", {"cols": 0, "rows": 24}, "cols"),
    ("POST", "/resize", {"cols": 80, "rows": 24, "x": 1}, "x"),
    ("GET", "/attach?offset=-1", None, "offset"),
    ("GET", "/attach?mode=w", None, "mode"),
    ("POST", "/signal", {"signal": 9}, "signal"),
    ("GET", "/output?offset=-1", None, "offset"),
    ("GET", "/output?offset=x", None, "offset"),
    ("GET", "/output?stream=yes", None, "stream"),
]


@pytest.mark.parametrize(("method", "suffix", "body", "param"), BAD_OTHER)
def test_bad_process_requests(
    raw: httpx2.Client, container: str, method: str, suffix: str, body: Any, param: str
) -> None:
    url = f"/v1/containers/{container}/processes/{PID}{suffix}"
    assert_error(raw.request(method, url, json=body), 400, param)


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "order=up", "after=cntr_1"])
def test_bad_process_list_queries(raw: httpx2.Client, container: str, query: str) -> None:
    assert_error(raw.get(f"/v1/containers/{container}/processes?{query}"), 400)


ROUTES = [
    ("POST", "", {"command": "true"}),
    ("GET", "", None),
    ("GET", f"/{PID}", None),
    ("DELETE", f"/{PID}", None),
    ("GET", f"/{PID}/output", None),
    ("GET", f"/{PID}/output?stream=true", None),
    ("POST", f"/{PID}/input", {"data": "x"}),
    ("POST", f"/{PID}/signal", {"signal": "TERM"}),
    ("POST", f"/{PID}/resize", {"cols": 80, "rows": 24}),
    ("GET", f"/{PID}/attach", None),
]


@pytest.mark.parametrize(("method", "suffix", "body"), ROUTES)
def test_another_owner_gets_404_on_every_process_route(
    daemon: InProcessDaemon, tcp: httpx2.Client, method: str, suffix: str, body: Any
) -> None:
    alice = {"Authorization": f"Bearer {daemon.keys['alice']}"}
    bob = {"Authorization": f"Bearer {daemon.keys['bob']}"}
    r = tcp.post("/v1/containers", json={"name": "alice's"}, headers=alice)
    cid = r.json()["id"]
    url = f"/v1/containers/{cid}/processes{suffix}"
    assert_error(tcp.request(method, url, json=body, headers=bob), 404, "container_id")


def test_a_malformed_process_id_is_404(raw: httpx2.Client, container: str) -> None:
    r = raw.get(f"/v1/containers/{container}/processes/nope")
    assert_error(r, 404, "process_id")


# ------------------------------------------------------------------ with a host agent


@contextlib.contextmanager
def host_agent(
    daemon: InProcessDaemon, cid: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """The real agent, as a host process of the test's user, answering for `cid` (the
    double's own agent socket path is too long for a unix socket)."""
    home = Path(tempfile.mkdtemp(prefix="sbxd-"))
    sock = home / "a.sock"
    code = (
        f"import sys; sys.path.insert(0, {str(AGENT_SCRIPT.parent)!r}); import agent; agent.main()"
    )
    env = {"SANDBOXD_AGENT_SOCKET": str(sock), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-B", "-c", code], env=env)
    runtime = daemon.runtime
    theirs = runtime.agent
    ours = AgentClient(sock, AgentLimits())  # pooled, as a runtime's is

    def agent(sid: str) -> AgentClient:
        return ours if sid == cid else theirs(sid)

    monkeypatch.setattr(runtime, "agent", agent)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline, "the agent did not start"
            time.sleep(0.01)
        yield home
    finally:
        proc.kill()
        proc.wait()
        daemon.call(ours.close())
        shutil.rmtree(home, ignore_errors=True)


def _stream_into(raw: httpx2.Client, url: str, events: list[dict[str, Any]]) -> None:
    """Read the output stream from offset 0 into `events` until it ends (then the time)."""
    with raw.stream("GET", f"{url}?stream=true") as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    events.append({"type": "closed", "at": time.monotonic()})


def _written(raw: httpx2.Client, url: str, text: str) -> bool:
    """Has the process written `text` (its whole output read from offset 0)?"""
    return text in "".join(i["data"] for i in raw.get(f"{url}/output").json()["output"])


def test_the_reaper_leaves_a_container_whose_process_runs(
    daemon: InProcessDaemon, client: openai.OpenAI, raw: httpx2.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cid = client.containers.create(name="busy").id
    with host_agent(daemon, cid, monkeypatch) as home:
        body = {"command": "sleep 30", "working_directory": str(home)}
        key = {"Idempotency-Key": "start-once"}
        r = raw.post(f"/v1/containers/{cid}/processes", json=body, headers=key)
        assert r.status_code == 200, r.text
        pid = r.json()["id"]
        assert r.json()["status"] == "running"
        again = raw.post(f"/v1/containers/{cid}/processes", json=body, headers=key)
        assert again.json()["id"] == pid  # a retry with the key starts nothing more
        assert len(raw.get(f"/v1/containers/{cid}/processes").json()["data"]) == 1
        assert "sandboxd_processes_running 1.0" in raw.get("/metrics").text
        monkeypatch.setattr(lifecycle, "time", Clock(21 * 60))
        time.sleep(1.0)  # ten sweeps of the reaper
        assert client.containers.retrieve(cid).status == "running"
        r = raw.delete(f"/v1/containers/{cid}/processes/{pid}")
        assert r.status_code == 200, r.text
        # Its watch lets go once the agent's table changes: the container is idle again.
        wait_for(lambda: client.containers.retrieve(cid).status == "expired", "expiry")


def test_a_process_outlives_a_daemon_restart_and_is_watched_again(
    daemon: InProcessDaemon, client: openai.OpenAI, raw: httpx2.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cid = client.containers.create(name="restarted").id
    with host_agent(daemon, cid, monkeypatch) as home:
        command = "i=0; while [ $i -lt 300 ]; do echo line-$i; i=$((i+1)); sleep 0.01; done; cat"
        r = raw.post(
            f"/v1/containers/{cid}/processes",
            json={"command": command, "working_directory": str(home)},
        )
        pid = r.json()["id"]
        url = f"/v1/containers/{cid}/processes/{pid}"
        streamed: list[dict[str, Any]] = []
        reader = threading.Thread(target=_stream_into, args=(raw, f"{url}/output", streamed))
        reader.start()
        wait_for(lambda: len(streamed) > 5, "the stream")
        stopping = time.monotonic()
        daemon.restart()
        reader.join(10)
        # The stream ended as the daemon began to drain, not after the drain's timeout.
        closed = streamed.pop()
        assert closed["at"] - stopping < daemon.config.server.drain_timeout_s
        last = streamed[-1]
        assert last["type"] == "end" and last["reason"] == "shutdown", last
        first = "".join(e["data"] for e in streamed if e["type"] == "stdout")
        with httpx2.Client(
            transport=httpx2.HTTPTransport(uds=daemon.socket), base_url="http://localhost"
        ) as again:
            wait_for(lambda: _written(again, url, "line-299\n"), "the output")
            rest = again.get(f"{url}/output?offset={last['next_offset']}").json()
            got = first + "".join(i["data"] for i in rest["output"])
            assert got == "".join(f"line-{i}\n" for i in range(300))
            assert rest["process"]["status"] == "running"  # cat waits for its input
            # Adopted by the new daemon's watch: the reaper leaves the container alone.
            monkeypatch.setattr(lifecycle, "time", Clock(21 * 60))
            time.sleep(1.0)
            assert again.get(f"/v1/containers/{cid}").json()["status"] == "running"
            r = again.post(f"{url}/input", json={"eof": True})
            assert r.status_code == 200, r.text
            wait_for(
                lambda: again.get(f"/v1/containers/{cid}").json()["status"] == "expired", "expiry"
            )
