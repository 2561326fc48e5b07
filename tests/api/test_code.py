"""Code sessions through the API: persistent Python, errors, timeouts, kills, plots, sessions."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx2
import openai
import pytest

from tests.api.conftest import DaemonHandle, exec_

pytestmark = pytest.mark.root

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def code(raw: httpx2.Client, cid: str, source: str, **extra: object) -> dict[str, Any]:
    r = raw.post(f"/v1/containers/{cid}/code", json={"code": source, **extra})
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body, dict)
    return body


def value(raw: httpx2.Client, cid: str, source: str, **extra: object) -> Any:
    body = code(raw, cid, source, **extra)
    assert body["outcome"] == {"type": "ok", "state_lost": False}, body
    return body["result"]


def test_state_persists_between_calls(raw: httpx2.Client, container: str) -> None:
    first = code(raw, container, "x = 41\nprint('hi')")
    assert first == {
        "object": "container.code_result",
        "container_id": container,
        "session_id": "default",
        "stdout": "hi\n",
        "stderr": "",
        "truncated": False,
        "result": None,
        "result_truncated": False,
        "error": None,
        "outcome": {"type": "ok", "state_lost": False},
        "restarted": False,
        "files": [],
        "files_truncated": False,
        "duration_ms": first["duration_ms"],
    }
    second = code(raw, container, "x + 1")
    assert (second["result"], second["restarted"]) == ("42", False)


def test_error_returns_traceback_and_state_survives(raw: httpx2.Client, container: str) -> None:
    value(raw, container, "x = 41")
    body = code(raw, container, "1 / 0")
    assert body["outcome"] == {"type": "error", "state_lost": False}
    error = body["error"]
    assert (error["name"], error["value"]) == ("ZeroDivisionError", "division by zero")
    assert error["traceback"].startswith("Traceback (most recent call last):")
    assert 'File "<cell-2>", line 1' in error["traceback"]
    assert error["traceback"].rstrip().endswith("ZeroDivisionError: division by zero")
    assert value(raw, container, "x + 1") == "42"


def test_timeout_interrupts_and_the_session_keeps_its_variables(
    raw: httpx2.Client, container: str
) -> None:
    value(raw, container, "x = 41")
    started = time.monotonic()
    body = code(raw, container, "while True: pass", timeout_ms=1000)
    elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 2.5, elapsed
    assert body["outcome"] == {"type": "timeout", "state_lost": False}
    assert body["error"]["name"] == "KeyboardInterrupt"
    assert "killed" not in body
    after = code(raw, container, "x + 1")
    assert (after["result"], after["restarted"]) == ("42", False)


def test_plot_returns_a_png_container_file(
    client: openai.OpenAI, raw: httpx2.Client, container: str
) -> None:
    source = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [2, 4, 8])\nplt.title('t')"
    body = code(raw, container, source, timeout_ms=60_000)
    assert body["outcome"]["type"] == "ok", body
    (png,) = body["files"]
    assert png["path"] == "/mnt/data/figure-1.png"
    assert png["id"].startswith("cfile_") and png["source"] == "assistant"
    assert png["object"] == "container.file" and png["bytes"] > 1000
    content = client.containers.files.content.retrieve(png["id"], container_id=container)
    assert content.read().startswith(PNG_SIGNATURE)
    # The same object as the files API lists, with the same id.
    listed = {f.path: f.id for f in client.containers.files.list(container)}
    assert listed["/mnt/data/figure-1.png"] == png["id"]
    # plt.show() saves too; a file the code writes itself is reported with its stable id.
    body = code(raw, container, "plt.plot([0, 1])\nplt.show()\nopen('n.txt', 'w').write('1')")
    assert sorted(f["path"] for f in body["files"]) == ["/mnt/data/figure-2.png", "/mnt/data/n.txt"]
    body = code(raw, container, "open('n.txt', 'a').write('2')")
    (again,) = body["files"]
    assert (again["path"], again["bytes"]) == ("/mnt/data/n.txt", 2)
    assert (
        again["id"]
        == {f.path: f.id for f in client.containers.files.list(container)}["/mnt/data/n.txt"]
    )


def test_oom_is_reported_and_the_next_call_says_restarted(
    raw: httpx2.Client, container: str
) -> None:
    value(raw, container, "x = 41")
    body = code(raw, container, "b = bytearray(2 * 1024**3)")
    assert body["outcome"] == {"type": "killed", "state_lost": True}
    assert body["killed"] == "oom"
    after = code(raw, container, "'x' in globals()")
    assert (after["restarted"], after["restart_reason"], after["result"]) == (True, "oom", "False")
    assert code(raw, container, "1")["restarted"] is False
    events = raw.get(f"/v1/containers/{container}/events").json()["data"]
    assert {"type": "oom_kill", "detail": {"session": "default"}}.items() <= next(
        e for e in events if e["type"] == "oom_kill"
    ).items()


def test_interpreter_killed_externally_is_reported(raw: httpx2.Client, container: str) -> None:
    value(raw, container, "x = 41")
    # SIGKILL is asynchronous: wait until the process is gone (a zombie does not match -f).
    kill = (
        "pkill -KILL -f '[i]nterpreter.py'; echo $?; while pgrep -f '[i]nterpreter.py'; do :; done"
    )
    out = exec_(raw, container, kill + " >/dev/null")
    assert out["output"][0]["stdout"] == "0\n"  # type: ignore[index]
    after = code(raw, container, "globals().get('x')")
    assert (after["restarted"], after["restart_reason"], after["result"]) == (True, "killed", None)


def test_named_sessions_list_delete_and_cap(raw: httpx2.Client, container: str) -> None:
    base = f"/v1/containers/{container}/code/sessions"
    value(raw, container, "x = 'default'")
    value(raw, container, "x = 'a'", session_id="a")
    assert value(raw, container, "x") == "'default'"
    assert value(raw, container, "x", session_id="a") == "'a'"
    r = raw.get(base)
    assert r.status_code == 200
    listed = r.json()
    assert listed["object"] == "list" and listed["has_more"] is False
    assert [(s["id"], s["object"], s["status"]) for s in listed["data"]] == [
        ("default", "container.code_session", "idle"),
        ("a", "container.code_session", "idle"),
    ]
    assert all(s["created_at"] <= s["last_used_at"] for s in listed["data"])

    r = raw.delete(f"{base}/a")
    assert r.json() == {"id": "a", "object": "container.code_session.deleted", "deleted": True}
    assert [s["id"] for s in raw.get(base).json()["data"]] == ["default"]
    for missing in ("a", "no-such", "bad.id"):
        r = raw.delete(f"{base}/{missing}")
        assert r.status_code == 404, r.text
        assert r.json()["error"]["param"] == "session_id"
    # A deleted session starts afresh (it is a new session, not a restart).
    fresh = code(raw, container, "'x' in globals()", session_id="a")
    assert (fresh["result"], fresh["restarted"]) == ("False", False)

    for n in range(6):  # default cap: 8 sessions per container
        value(raw, container, "1", session_id=f"s{n}")
    r = raw.post(f"/v1/containers/{container}/code", json={"code": "1", "session_id": "s6"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "session_id", r.text
    assert value(raw, container, "x") == "'default'"  # existing sessions still run


def test_busy_session_answers_409(daemon: DaemonHandle, raw: httpx2.Client, container: str) -> None:
    slow: dict[str, Any] = {}

    def run_slow() -> None:
        with httpx2.Client(
            transport=httpx2.HTTPTransport(uds=daemon.socket), base_url="http://localhost"
        ) as other:
            slow.update(code(other, container, "import time\ntime.sleep(1.5)\n'slept'"))

    thread = threading.Thread(target=run_slow)
    thread.start()
    try:
        time.sleep(0.5)
        r = raw.post(f"/v1/containers/{container}/code", json={"code": "1"})
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "session_busy"
        assert r.headers["x-should-retry"] == "true"  # nothing ran: a retry is safe
        statuses = {s["id"]: s["status"] for s in raw.get(
            f"/v1/containers/{container}/code/sessions").json()["data"]}  # fmt: skip
        assert statuses == {"default": "busy"}
    finally:
        thread.join()
    assert slow["result"] == "'slept'"


def test_a_running_call_keeps_the_container_active(raw: httpx2.Client, container: str) -> None:
    def last_active() -> int:  # listing does not count as activity
        (item,) = [c for c in raw.get("/v1/containers?limit=100").json()["data"]
                   if c["id"] == container]  # fmt: skip
        return int(item["last_active_at"])

    before = last_active()
    assert value(raw, container, "import time\ntime.sleep(2.2)\n1") == "1"
    assert last_active() >= before + 2


def test_streaming_sse(raw: httpx2.Client, container: str) -> None:
    body = {
        "code": "import sys, time\nprint('one')\ntime.sleep(0.3)\n"
        "print('two', file=sys.stderr)\n6*7",
        "stream": True,
    }
    events = []
    with raw.stream("POST", f"/v1/containers/{container}/code", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    merged: list[dict[str, Any]] = []  # a line may come in more than one chunk
    for e in events:
        if merged and e["type"] in ("stdout", "stderr") and merged[-1]["type"] == e["type"]:
            merged[-1] = {**e, "data": merged[-1]["data"] + e["data"]}
        else:
            merged.append(e)
    assert [(e["type"], e.get("data")) for e in merged] == [
        ("stdout", "one\n"),
        ("stderr", "two\n"),
        ("result", None),
    ]
    final = events[-1]
    assert (final["result"], final["outcome"]["type"]) == ("42", "ok")
    assert "stdout" not in final and final["object"] == "container.code_result"


def test_output_cap_and_result_cap(raw: httpx2.Client, container: str) -> None:
    body = code(raw, container, "print('x' * 100000)\n'y' * 50000", max_output_length=1000)
    assert body["stdout"] == "x" * 1000 and body["truncated"] is True
    assert len(body["result"]) == 10240 and body["result_truncated"] is True


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "code"),
        ({"code": 1}, "code"),
        ({"code": "1", "bogus": 1}, "bogus"),
        ({"code": "1", "session_id": "no/slash"}, "session_id"),
        ({"code": "1", "session_id": "x" * 65}, "session_id"),
        ({"code": "1", "timeout_ms": 0}, "timeout_ms"),
        ({"code": "1", "max_output_length": -1}, "max_output_length"),
        ({"code": "1", "stream": "yes"}, "stream"),
        ({"code": "x" * ((1 << 20) + 1)}, "code"),
    ],
)
def test_bad_requests_are_refused(
    raw: httpx2.Client, container: str, body: dict[str, Any], param: str
) -> None:
    r = raw.post(f"/v1/containers/{container}/code", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_unknown_container_is_404(raw: httpx2.Client) -> None:
    cid = "cntr_" + "0" * 48
    for method, path in [
        ("POST", f"/v1/containers/{cid}/code"),
        ("GET", f"/v1/containers/{cid}/code/sessions"),
        ("DELETE", f"/v1/containers/{cid}/code/sessions/default"),
    ]:
        r = raw.request(method, path, json={"code": "1"} if method == "POST" else None)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["param"] == "container_id"


def test_output_text_like_execs(raw: httpx2.Client, container: str) -> None:
    """Bytes that are not UTF-8 cost 3 bytes each (raw U+FFFD); a trailing incomplete
    character is flushed as U+FFFD in the stream as in the reply."""
    source = "import sys\nsys.stdout.buffer.write(b'\\xff' * 1048576 + b'a\\xe2\\x82')"
    body = {"code": source, "max_output_length": 2 << 20}
    r = raw.post(f"/v1/containers/{container}/code", json=body)
    assert r.status_code == 200
    assert r.json()["stdout"] == "\ufffd" * (1 << 20) + "a\ufffd"
    assert len(r.content) < 3 * (1 << 20) + 4096, len(r.content)
    streamed = ""
    with raw.stream("POST", f"/v1/containers/{container}/code", json={**body, "stream": True}) as s:
        for line in s.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["type"] == "stdout":
                streamed += json.loads(line[6:])["data"]
    assert streamed == "\ufffd" * (1 << 20) + "a\ufffd"
