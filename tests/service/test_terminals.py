"""Attachments, in-process, with the real agent run as a host process standing in for the
sandbox's (tests/service/test_processes.py's `host_agent`): the daemon's shutdown closes an
open attachment with 1001 at once (it never holds the drain) and the terminal runs on; the
metrics count attachments and their bytes; the server pings; a process deleted while attached
ends the attachment with an exit message (no code) and 1000; input a process leaves unread for
`exec.keepalive_s` is refused, not held until the heartbeat drops the connection. The rest, in
real sandboxes:
tests/api/test_terminals.py."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import openai
import pytest

from tests.service.conftest import InProcessDaemon, wait_for
from tests.service.test_processes import host_agent

KEEPALIVE_S = 0.3


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"exec.keepalive_s": KEEPALIVE_S}


def _metric(raw: httpx2.Client, line: str) -> bool:
    return line in raw.get("/metrics").text.splitlines()


def started(raw: httpx2.Client, cid: str, home: Path, command: str, tty: bool) -> tuple[str, str]:
    """Start `command` in the host agent's `home`: its process id and attach URL."""
    body = {"command": command, "tty": tty, "working_directory": str(home)}
    r = raw.post(f"/v1/containers/{cid}/processes", json=body)
    assert r.status_code == 200, r.text
    pid = r.json()["id"]
    return pid, f"http://localhost/v1/containers/{cid}/processes/{pid}/attach"


def test_shutdown_closes_an_attachment_with_1001_at_once_and_the_terminal_runs_on(
    daemon: InProcessDaemon, client: openai.OpenAI, raw: httpx2.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cid = client.containers.create(name="attached").id
    with host_agent(daemon, cid, monkeypatch) as home:
        pid, url = started(raw, cid, home, "cat", tty=True)
        seen: dict[str, object] = {}
        echoed = threading.Event()

        async def attached() -> None:
            connector = aiohttp.UnixConnector(path=daemon.socket)
            async with aiohttp.ClientSession(connector=connector) as s, s.ws_connect(url) as ws:
                first = json.loads((await ws.receive(timeout=10)).data)
                seen["writer"] = first["writer"]
                await ws.send_bytes(b"hello\n")
                out = b""
                while b"hello\r\n" not in out:
                    msg = await ws.receive(timeout=10)
                    assert msg.type == aiohttp.WSMsgType.BINARY, msg
                    out += msg.data
                echoed.set()
                while (msg := await ws.receive(timeout=30)).type == aiohttp.WSMsgType.BINARY:
                    pass  # cat's own copy of the line
                seen["closed"] = (msg.type, ws.close_code, time.monotonic())

        client_thread = threading.Thread(target=lambda: asyncio.run(attached()))
        client_thread.start()
        assert echoed.wait(15), "no echo"
        assert _metric(raw, "sandboxd_attachments_open 1.0")
        assert _metric(raw, 'sandboxd_attach_bytes_total{direction="in"} 6.0')
        stopping = time.monotonic()
        daemon.restart()
        client_thread.join(15)
        kind, code, at = seen["closed"]  # type: ignore[misc]
        assert (kind, code) == (aiohttp.WSMsgType.CLOSE, 1001)
        assert at - stopping < daemon.config.server.drain_timeout_s / 2
        assert seen["writer"] is True
        with httpx2.Client(
            transport=httpx2.HTTPTransport(uds=daemon.socket), base_url="http://localhost"
        ) as again:
            proc = again.get(f"/v1/containers/{cid}/processes/{pid}").json()
            assert proc["status"] == "running" and proc["tty"] is True
            wait_for(lambda: _metric(again, "sandboxd_attachments_open 0.0"), "the gauge")


def test_the_server_pings_and_a_deleted_process_ends_its_attachment_with_an_exit(
    daemon: InProcessDaemon, client: openai.OpenAI, raw: httpx2.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cid = client.containers.create(name="pinged").id
    with host_agent(daemon, cid, monkeypatch) as home:
        pid, url = started(raw, cid, home, "sleep 60", tty=True)

        async def attached() -> tuple[float, dict[str, Any], int | None]:
            connector = aiohttp.UnixConnector(path=daemon.socket)
            async with (
                aiohttp.ClientSession(connector=connector) as s,
                s.ws_connect(url, autoping=False) as ws,
            ):
                assert json.loads((await ws.receive(timeout=10)).data)["type"] == "attached"
                began = time.monotonic()
                ping = await ws.receive(timeout=10)
                assert ping.type == aiohttp.WSMsgType.PING, ping
                pinged = time.monotonic() - began
                await ws.pong(ping.data)
                gone = await asyncio.to_thread(raw.delete, f"/v1/containers/{cid}/processes/{pid}")
                assert gone.status_code == 200, gone.text
                while (msg := await ws.receive(timeout=10)).type != aiohttp.WSMsgType.TEXT:
                    assert msg.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.BINARY), msg
                ended = json.loads(msg.data)
                while (msg := await ws.receive(timeout=10)).type != aiohttp.WSMsgType.CLOSE:
                    assert msg.type == aiohttp.WSMsgType.PING, msg
                return pinged, ended, ws.close_code

        pinged, ended, code = asyncio.run(attached())
        assert pinged < KEEPALIVE_S * 5
        assert ended["type"] == "exit" and ended["exit_code"] is None, ended
        assert code == 1000


def test_input_unread_for_the_keepalive_is_refused_and_the_connection_lives(
    daemon: InProcessDaemon, client: openai.OpenAI, raw: httpx2.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cid = client.containers.create(name="unread").id
    with host_agent(daemon, cid, monkeypatch) as home:
        _, url = started(raw, cid, home, "sleep 2; wc -c", tty=False)
        frame, frames = 32 << 10, 64

        async def attached() -> tuple[bytes, list[dict[str, Any]], int | None]:
            connector = aiohttp.UnixConnector(path=daemon.socket)
            async with aiohttp.ClientSession(connector=connector) as s, s.ws_connect(url) as ws:
                assert json.loads((await ws.receive(timeout=10)).data)["type"] == "attached"
                for _ in range(frames):
                    await ws.send_bytes(b"z" * frame)
                await ws.send_str(json.dumps({"type": "eof"}))
                out, texts = b"", []
                while (msg := await ws.receive(timeout=10)).type != aiohttp.WSMsgType.CLOSE:
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        out += msg.data
                    else:
                        assert msg.type == aiohttp.WSMsgType.TEXT, msg
                        texts.append(json.loads(msg.data))
                return out, texts, ws.close_code

        out, texts, code = asyncio.run(attached())
        assert code == 1000, (out, texts)
        assert texts[-1]["type"] == "exit" and texts[-1]["exit_code"] == 0, texts
        refused = {t["code"] for t in texts[:-1]}
        assert refused == {"sandbox_busy"}, texts
        taken = int(out)
        assert taken % frame == 0 and (1 << 20) <= taken < frame * frames, taken
