"""A tenant printing as much as it may: the daemon keeps at most `exec.max_total_output` of
one call's output, sends bytes that are not UTF-8 at no more than three bytes each, and
encodes the reply in slices, so every other request keeps being answered at once.

Before, 8 commands of 16 MiB of 0xff each grew the daemon by ~2 GB (each byte a 6-byte
`\\ufffd` escape, the reply encoded whole) and blocked /healthz for 5.5 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.api.conftest import DaemonHandle

pytestmark = pytest.mark.root

MIB = 1 << 20
BUDGET = 16 * MIB  # exec.max_total_output's default, which the API suite's daemon keeps
FLOOD = "head -c {n} /dev/zero | tr '\\0' '\\377'"

# Polls /healthz back to back (from its own process: the test's parsing must not stall it)
# until a line arrives on stdin, then prints the latencies, corrected for coordinated
# omission: a reply that took 0.5 s stands for the 50 probes of a 10 ms cadence it held up.
PROBE = r"""
import json, select, sys, time, httpx2
INTERVAL = 0.01
lat = []
with httpx2.Client(transport=httpx2.HTTPTransport(uds=sys.argv[1]), base_url="http://x",
                   timeout=60) as c:
    c.get("/healthz")
    print("ready", flush=True)
    while not select.select([sys.stdin], [], [], 0)[0]:
        t = time.monotonic()
        assert c.get("/healthz").status_code == 200
        took = time.monotonic() - t
        while took > 0:
            lat.append(took)
            took -= INTERVAL
        time.sleep(INTERVAL)
print(json.dumps(lat), flush=True)
"""


@contextmanager
def health_probe(socket: str) -> Iterator[list[float]]:
    found: list[float] = []
    proc = subprocess.Popen(
        [sys.executable, "-c", PROBE, socket],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline() == "ready\n"
        yield found
        proc.stdin.write("stop\n")
        proc.stdin.flush()
        found += json.loads(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(key)


@contextmanager
def peak_rss_growth(pid: int) -> Iterator[list[int]]:
    """Growth of the daemon's peak RSS (VmHWM, reset first) over the block."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = _status(pid, "VmRSS")
    found: list[int] = []
    yield found
    found.append(_status(pid, "VmHWM") - before)


def _sse(raw: httpx2.Client, cid: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The events, split from the raw bytes (cheaply: this client shares the host's CPUs
    with the daemon under test)."""
    events, pending = [], b""
    with raw.stream("POST", f"/v1/containers/{cid}/exec", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        for chunk in r.iter_bytes():
            *complete, pending = (pending + chunk).split(b"\n\n")
            events += [json.loads(e.removeprefix(b"data: ")) for e in complete]
    assert pending == b""
    return events


def _from_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The non-streamed reply's `output` (what we check of it), rebuilt from the events."""
    items: dict[int, dict[str, Any]] = {}
    for e in events:
        item = items.setdefault(e.get("command_index", -1), {"stdout": [], "stderr": []})
        if e["type"] in ("stdout", "stderr"):
            item[e["type"]].append(e["data"])
        elif e["type"] == "outcome":
            item.update({k: v for k, v in e.items() if k not in ("type", "command_index")})
    assert events[-1]["type"] == "done", events[-1]
    for item in items.values():
        item.update(stdout="".join(item["stdout"]), stderr="".join(item["stderr"]))
    return [items[i] for i in sorted(items) if i >= 0]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_max_output_of_invalid_utf8_stays_bounded(
    daemon: DaemonHandle, raw: httpx2.Client, container: str, stream: bool
) -> None:
    """Four commands each print one byte more than the largest per-command cap, all 0xff:
    the first gets the whole call's budget, the rest nothing (all truncated); the daemon's
    peak RSS grows by little more than the budget and /healthz keeps answering at once."""
    body = {
        "commands": [FLOOD.format(n=BUDGET + 1)] * 4,
        "max_output_length": BUDGET,
        "timeout_ms": 120_000,
    }
    r = raw.post(f"/v1/containers/{container}/exec", json={"commands": ["true"]})
    assert r.status_code == 200  # warm: connection pooled, code paths loaded
    with health_probe(daemon.socket) as latencies, peak_rss_growth(daemon.pid) as growth:
        if stream:
            events = _sse(raw, container, body)
        else:
            r = raw.post(f"/v1/containers/{container}/exec", json=body)
            assert r.status_code == 200, r.text[:500]
            size = len(r.content)
    if stream:
        output = _from_events(events)
    else:
        # U+FFFD goes out as its 3 UTF-8 bytes: 48 MiB, where `\ufffd` escapes made 96 MiB.
        assert 3 * BUDGET < size < 3 * BUDGET + 4096, size
        output = r.json()["output"]
    assert [(len(i["stdout"]), i["stderr"], i["truncated"]) for i in output] == [
        (BUDGET, "", True), (0, "", True), (0, "", True), (0, "", True)
    ]  # fmt: skip
    assert set(output[0]["stdout"]) == {"\ufffd"}
    assert all(i["outcome"] == {"type": "exit", "exit_code": 0} for i in output)
    print(
        f"hostile output ({'sse' if stream else 'json'}): daemon peak RSS +{growth[0] >> 20} MiB;"
        f" /healthz p99 {p99(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
        f" over {len(latencies)} probes"
    )
    assert growth[0] < BUDGET + 48 * MIB, f"daemon peak RSS grew by {growth[0] >> 20} MiB"
    assert p99(latencies) < 0.1, f"/healthz p99 {p99(latencies) * 1000:.0f} ms"


def test_the_budget_is_shared_by_the_commands_of_a_call(raw: httpx2.Client, container: str) -> None:
    """Per-command cap 6 MiB, four commands printing 8 MiB: 6 + 6 + 4 + 0 of the 16 MiB."""
    cmd = FLOOD.format(n=8 * MIB).replace("'\\377'", "x")
    r = raw.post(
        f"/v1/containers/{container}/exec",
        json={"commands": [cmd] * 4, "max_output_length": 6 * MIB, "timeout_ms": 60_000},
    )
    assert r.status_code == 200, r.text[:500]
    out = r.json()
    assert [(len(i["stdout"]), i["truncated"]) for i in out["output"]] == [
        (6 * MIB, True), (6 * MIB, True), (4 * MIB, True), (0, True)
    ]  # fmt: skip
    assert out["max_output_length"] == 6 * MIB
