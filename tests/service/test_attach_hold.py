"""An attachment holding input the process does not read (up to `exec.keepalive_s`, long
here): the daemon's shutdown cuts it with 1001 at once, not after the hold, and the process
runs on. In-process, with the real agent as a host process (test_processes.host_agent)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import aiohttp
import httpx2
import openai
import pytest

from tests.service.conftest import InProcessDaemon, wait_for
from tests.service.test_processes import host_agent
from tests.service.test_terminals import started

KEEPALIVE_S = 20.0
FRAME = 32 << 10


def _taken(raw: httpx2.Client) -> float:
    """Input bytes the process's agent has taken from attachments."""
    for line in raw.get("/metrics").text.splitlines():
        if line.startswith('sandboxd_attach_bytes_total{direction="in"}'):
            return float(line.split()[-1])
    return 0.0


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"exec.keepalive_s": KEEPALIVE_S}


def test_shutdown_cuts_an_input_hold_with_1001_at_once(
    daemon: InProcessDaemon, client: openai.OpenAI, raw: httpx2.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cid = client.containers.create(name="held").id
    with host_agent(daemon, cid, monkeypatch) as home:
        pid, url = started(raw, cid, home, "sleep 120", tty=False)
        seen: dict[str, Any] = {}
        sending = threading.Event()

        async def attached() -> None:
            connector = aiohttp.UnixConnector(path=daemon.socket)
            async with aiohttp.ClientSession(connector=connector) as s, s.ws_connect(url) as ws:
                assert json.loads((await ws.receive(timeout=10)).data)["type"] == "attached"
                sock = ws.get_extra_info("socket")

                async def send() -> None:  # more than the agent keeps for a process (1 MiB)
                    for _ in range(96):
                        await ws.send_bytes(b"z" * FRAME)

                sender = asyncio.create_task(send())
                try:
                    sending.set()
                    msg = await ws.receive(timeout=KEEPALIVE_S * 2)
                    seen["closed"] = (msg.type, ws.close_code, time.monotonic())
                    # Our unsent frames keep our end open until a write finds the daemon's
                    # closed: wait for that, or asyncio.run() would end with it still open.
                    for _ in range(1000):
                        if sock.fileno() == -1:
                            break
                        await asyncio.sleep(0.01)
                finally:
                    sender.cancel()
                    await asyncio.gather(sender, return_exceptions=True)

        client_thread = threading.Thread(target=lambda: asyncio.run(attached()))
        client_thread.start()
        assert sending.wait(15), "never attached"
        # The agent keeps 1 MiB of input a process has not read: once that much is taken, the
        # daemon holds the next frame and reads no more (the rest of the 3 MiB waits).
        wait_for(lambda: _taken(raw) >= 1 << 20, "1 MiB of input taken")
        time.sleep(0.3)
        assert _taken(raw) < 96 * FRAME
        stopping = time.monotonic()
        daemon.restart()
        client_thread.join(KEEPALIVE_S * 2)
        kind, code, at = seen["closed"]
        assert (kind, code) == (aiohttp.WSMsgType.CLOSE, 1001)
        assert at - stopping < KEEPALIVE_S / 4
        with httpx2.Client(
            transport=httpx2.HTTPTransport(uds=daemon.socket), base_url="http://localhost"
        ) as again:
            assert again.get(f"/v1/containers/{cid}/processes/{pid}").json()["status"] == "running"
