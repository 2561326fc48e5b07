"""Kernel limits tripped through the API, with the daemon and other sandboxes unaffected."""

from __future__ import annotations

import time

import httpx2
import openai
import pytest

from tests.api.conftest import DaemonHandle, exec_

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _still_fine(raw: httpx2.Client, *cids: str) -> None:
    for cid in cids:
        out = exec_(raw, cid, "echo alive")
        assert out["output"][0]["stdout"] == "alive\n"  # type: ignore[index]


def test_memory_bomb_is_oom_killed_and_reported(
    client: openai.OpenAI, raw: httpx2.Client, container: str
) -> None:
    bystander = client.containers.create(name="bystander")
    try:
        out = exec_(raw, container, "python3 -c 'b = bytearray(2 * 1024**3); print(len(b))'")
        item = out["output"][0]  # type: ignore[index]
        assert item.get("killed") == "oom", item
        assert item["outcome"] == {"type": "exit", "exit_code": 137}
        assert item["stdout"] == ""
        _still_fine(raw, container, bystander.id)
        events = raw.get(f"/v1/containers/{container}/events").json()["data"]
        assert [e["type"] for e in events] == ["created", "oom_kill"]
        assert "bytearray" in events[1]["detail"]["command"]
    finally:
        client.containers.delete(bystander.id)


def test_fork_bomb_hits_the_pids_limit(raw: httpx2.Client, container: str) -> None:
    bomb = (
        "python3 -c '\nimport os, time\n"
        "while True:\n"
        "    try:\n        pid = os.fork()\n    except OSError:\n        time.sleep(60)\n"
        "    if pid == 0:\n        time.sleep(60)\n        os._exit(0)\n'"
    )
    started = time.monotonic()
    out = exec_(raw, container, bomb, timeout_ms=30_000)
    item = out["output"][0]  # type: ignore[index]
    assert item["killed"] == "pids"
    assert item["outcome"] == {"type": "exit", "exit_code": 137}
    assert time.monotonic() - started < 15
    _still_fine(raw, container)
    events = raw.get(f"/v1/containers/{container}/events").json()["data"]
    assert [e["type"] for e in events] == ["created", "pids_limit"]


def test_filling_the_workspace_gives_enospc(raw: httpx2.Client, container: str) -> None:
    out = exec_(raw, container, "dd if=/dev/zero of=big bs=1M count=200 2>&1; echo rc=$?")
    stdout = out["output"][0]["stdout"]  # type: ignore[index]
    assert "No space left on device" in stdout and "rc=1" in stdout
    _still_fine(raw, container)


def test_stdout_flood_is_capped_without_daemon_growth(
    daemon: DaemonHandle, raw: httpx2.Client, container: str
) -> None:
    cap = 256 << 10
    # Same request shape with a small flood first, so the measured one only adds the flood.
    exec_(raw, container, "head -c 1000000 /dev/zero", max_output_length=cap)
    rss_before = daemon.rss_bytes()
    out = exec_(raw, container, "head -c 100000000 /dev/zero", max_output_length=cap)
    item = out["output"][0]  # type: ignore[index]
    assert item["truncated"] is True and len(item["stdout"]) == cap
    assert item["outcome"] == {"type": "exit", "exit_code": 0}
    growth = daemon.rss_bytes() - rss_before
    # 100 MB went through the sandbox; the daemon may grow by the cap plus allocator noise.
    assert growth < cap + (2 << 20), f"daemon grew by {growth} bytes"
