"""Exec: shell-tool shaped batches, streaming, timeouts, caps, env, stdin, cwd."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx2
import pytest

from tests.api.conftest import exec_

pytestmark = pytest.mark.root


def test_batch_runs_in_order_and_survives_failures(raw: httpx2.Client, container: str) -> None:
    out = exec_(
        raw, container, "echo a; echo b >&2; exit 3", "pwd", "echo $FOO", env={"FOO": "bar"}
    )
    items = out["output"]
    assert isinstance(items, list)
    assert [(i["stdout"], i["stderr"], i["outcome"]) for i in items] == [
        ("a\n", "b\n", {"type": "exit", "exit_code": 3}),
        ("/mnt/data\n", "", {"type": "exit", "exit_code": 0}),
        ("bar\n", "", {"type": "exit", "exit_code": 0}),
    ]
    assert out["object"] == "container.exec"


def test_stdin_and_working_directory(raw: httpx2.Client, container: str) -> None:
    out = exec_(raw, container, "pwd; cat", stdin="from stdin", working_directory="/tmp")
    assert out["output"][0]["stdout"] == "/tmp\nfrom stdin"  # type: ignore[index]
    r = raw.post(
        f"/v1/containers/{container}/exec",
        json={"commands": ["true"], "working_directory": "/nope"},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "working_directory"


def test_timeout_returns_partial_output_and_stops_the_batch(
    raw: httpx2.Client, container: str
) -> None:
    started = time.monotonic()
    out = exec_(raw, container, "echo start; while true; do :; done", "echo never", timeout_ms=1000)
    assert time.monotonic() - started < 6
    assert out["output"] == [
        {"stdout": "start\n", "stderr": "", "outcome": {"type": "timeout"}, "truncated": False,
         "duration_ms": out["output"][0]["duration_ms"]}  # type: ignore[index]
    ]  # fmt: skip
    # the looping process is gone (killed at once; reaped within moments on a loaded host)
    deadline = time.monotonic() + 3
    while True:
        ps = exec_(raw, container, "ps -eo comm= | grep -c '^sh$' || true")
        if ps["output"][0]["stdout"] == "1\n" or time.monotonic() > deadline:  # type: ignore[index]
            break
        time.sleep(0.1)
    assert ps["output"][0]["stdout"] == "1\n"  # type: ignore[index]


def test_output_cap_marks_truncation(raw: httpx2.Client, container: str) -> None:
    out = exec_(raw, container, "head -c 100000 /dev/zero | tr '\\0' x", max_output_length=1000)
    item = out["output"][0]  # type: ignore[index]
    assert item["stdout"] == "x" * 1000 and item["truncated"] is True
    assert out["max_output_length"] == 1000


def test_streaming_sse(raw: httpx2.Client, container: str) -> None:
    body = {"commands": ["echo one; sleep 0.3; echo two >&2", "exit 4"], "stream": True}
    events = []
    with raw.stream("POST", f"/v1/containers/{container}/exec", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    kinds = [(e["type"], e.get("command_index"), e.get("data")) for e in events]
    assert kinds == [
        ("stdout", 0, "one\n"),
        ("stderr", 0, "two\n"),
        ("outcome", 0, None),
        ("outcome", 1, None),
        ("done", None, None),
    ]
    assert events[2]["outcome"] == {"type": "exit", "exit_code": 0}
    assert events[3]["outcome"] == {"type": "exit", "exit_code": 4}


def _sse_events(raw: httpx2.Client, cid: str, body: dict[str, object]) -> list[dict[str, Any]]:
    events = []
    with raw.stream("POST", f"/v1/containers/{cid}/exec", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():  # splits like str.splitlines: at U+2028 too
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events


def test_bytes_that_are_not_utf8_cost_three_bytes_each(raw: httpx2.Client, container: str) -> None:
    """Each invalid byte is U+FFFD sent as raw UTF-8 (3 bytes), not a 6-byte escape."""
    r = raw.post(
        f"/v1/containers/{container}/exec",
        json={"commands": ["head -c 1048576 /dev/zero | tr '\\0' '\\377'"]},
    )
    assert r.status_code == 200
    assert r.json()["output"][0]["stdout"] == "\ufffd" * (1 << 20)
    assert len(r.content) < 3 * (1 << 20) + 1024, len(r.content)
    assert r.headers["content-type"] == "application/json; charset=utf-8"


@pytest.mark.parametrize(
    ("command", "text"),
    [
        # a euro sign split between two writes arrives whole
        ("printf 'a\\342'; sleep 0.3; printf '\\202\\254b'", "a\u20acb"),
        # an incomplete character at the very end is U+FFFD, in the stream as in the reply
        ("printf 'a\\342\\202'", "a\ufffd"),
        # U+2028/U+2029 and NEL go through, and never cut an event in two
        ("printf '1\\342\\200\\2502\\342\\200\\2513\\302\\2054'", "1\u20282\u20293\u00854"),
    ],
    ids=["split", "tail", "separators"],
)
def test_streamed_text_equals_the_reply(
    raw: httpx2.Client, container: str, command: str, text: str
) -> None:
    out = exec_(raw, container, command, "printf z")
    assert [i["stdout"] for i in out["output"]] == [text, "z"]  # type: ignore[union-attr,index]
    events = _sse_events(raw, container, {"commands": [command, "printf z"]})
    streamed = ["", ""]
    for e in events:
        if e["type"] == "stdout":
            streamed[e["command_index"]] += e["data"]
        if e["type"] == "outcome":
            assert streamed[e["command_index"]] == [text, "z"][e["command_index"]]
    assert streamed == [text, "z"]
    assert events[-1]["type"] == "done"
