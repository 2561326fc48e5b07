"""Background processes through the API, in real sandboxes: a server started as a process, its
output read by offset and streamed (a client that disconnects and reconnects loses nothing the
ring holds), the ring's bound, stdin, signals, a delete that takes the whole group, the cap.
Validation, ownership and the reaper are in tests/service/test_processes.py."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest

from tests.api.conftest import exec_

pytestmark = pytest.mark.root

RING = 4 << 20  # processes.ring_bytes' default


def start(raw: httpx2.Client, cid: str, command: str, **extra: object) -> dict[str, Any]:
    r = raw.post(f"/v1/containers/{cid}/processes", json={"command": command, **extra})
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body, dict)
    return body


def get(raw: httpx2.Client, cid: str, pid: str, suffix: str = "") -> dict[str, Any]:
    r = raw.get(f"/v1/containers/{cid}/processes/{pid}{suffix}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body, dict)
    return body


def wait_exited(raw: httpx2.Client, cid: str, pid: str, within: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while (proc := get(raw, cid, pid))["status"] == "running":
        assert time.monotonic() < deadline, f"{pid} still runs"
        time.sleep(0.05)
    return proc


def text_of(output: dict[str, Any], stream: str | None = None) -> str:
    return "".join(i["data"] for i in output["output"] if stream in (None, i["stream"]))


def events(r: httpx2.Response) -> Iterator[dict[str, Any]]:
    for line in r.iter_lines():
        if line.startswith("data: "):
            yield json.loads(line[6:])


def listed(raw: httpx2.Client, cid: str) -> str:
    """Every command line in the sandbox (from /proc, which every image has)."""
    script = 'for p in /proc/[0-9]*; do tr "\\0" " " < "$p/cmdline"; echo; done 2>/dev/null'
    return str(exec_(raw, cid, script)["output"][0]["stdout"])


def test_a_server_runs_on_and_its_output_is_read_by_offset_and_streamed(
    raw: httpx2.Client, container: str
) -> None:
    proc = start(raw, container, "exec python3 -u -m http.server 8000 --bind 127.0.0.1")
    pid = proc["id"]
    assert proc["object"] == "container.process" and proc["id"].startswith("proc_")
    assert (proc["status"], proc["exit_code"], proc["tty"]) == ("running", None, False)
    fetch = (
        'python3 -c "import urllib.request, time\n'
        "for _ in range(100):\n"
        "    try: print(urllib.request.urlopen('http://127.0.0.1:8000/').status); break\n"
        '    except OSError: time.sleep(0.1)"'
    )
    assert exec_(raw, container, fetch)["output"][0]["stdout"] == "200\n"
    # The server logs the request on stderr: read it from offset 0.
    deadline = time.monotonic() + 10
    while '"GET / HTTP/1.1" 200' not in text_of(out := get(raw, container, pid, "/output")):
        assert time.monotonic() < deadline, out
        time.sleep(0.05)
    assert (out["offset"], out["dropped"]) == (0, 0)
    assert out["process"]["status"] == "running"
    first = out["next_offset"]
    assert first == out["process"]["output_bytes"] > 0
    # A second request, streamed from where the read ended: only the new line comes.
    exec_(raw, container, fetch)
    url = f"/v1/containers/{container}/processes/{pid}/output?offset={first}&stream=true"
    with raw.stream("GET", url) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        seen = events(r)
        assert next(seen) == {"type": "start", "offset": first, "dropped": 0}
        chunk = next(seen)
    assert chunk["type"] == "stderr" and '"GET / HTTP/1.1" 200' in chunk["data"]
    assert chunk["next_offset"] > first
    # It outlived both requests; listed, then deleted.
    assert [p["id"] for p in raw.get(f"/v1/containers/{container}/processes").json()["data"]] == [
        pid
    ]
    r = raw.delete(f"/v1/containers/{container}/processes/{pid}")
    assert r.json() == {"id": pid, "object": "container.process.deleted", "deleted": True}
    assert raw.get(f"/v1/containers/{container}/processes/{pid}").status_code == 404


def test_a_reconnecting_reader_loses_nothing_and_the_stream_ends_with_the_process(
    raw: httpx2.Client, container: str
) -> None:
    command = "for i in $(seq 1 40); do echo line-$i; sleep 0.05; done; echo err >&2; exit 3"
    pid = start(raw, container, command)["id"]
    url = f"/v1/containers/{container}/processes/{pid}/output?stream=true&offset="
    got, offset = "", 0
    with raw.stream("GET", url + "0") as r:
        for event in events(r):
            if event["type"] == "stdout":
                got, offset = got + event["data"], event["next_offset"]
                if "line-5\n" in got:
                    break  # the client goes away mid-stream
    time.sleep(0.5)  # the process writes on meanwhile
    with raw.stream("GET", url + str(offset)) as r:
        seen = list(events(r))
    assert seen[0] == {"type": "start", "offset": offset, "dropped": 0}
    got += "".join(e["data"] for e in seen if e["type"] == "stdout")
    assert got == "".join(f"line-{i}\n" for i in range(1, 41))
    assert "".join(e["data"] for e in seen if e["type"] == "stderr") == "err\n"
    last = seen[-1]
    assert last["type"] == "exit" and last["next_offset"] == len(got) + 4
    assert (last["process"]["status"], last["process"]["exit_code"]) == ("exited", 3)
    proc = wait_exited(raw, container, pid)
    assert proc["ended_at"] >= proc["created_at"] and proc["output_bytes"] == len(got) + 4
    kinds = [e["type"] for e in raw.get(f"/v1/containers/{container}/events").json()["data"]]
    deadline = time.monotonic() + 10
    while "process_exited" not in kinds:  # the watch records it as it sees the exit
        assert time.monotonic() < deadline, kinds
        time.sleep(0.05)
        kinds = [e["type"] for e in raw.get(f"/v1/containers/{container}/events").json()["data"]]


def test_the_ring_keeps_the_last_bytes_and_reports_what_was_dropped(
    raw: httpx2.Client, container: str
) -> None:
    total = RING + 300_000
    pid = start(raw, container, f"head -c {total - 4} /dev/zero | tr '\\0' a; echo END")["id"]
    proc = wait_exited(raw, container, pid)
    assert proc["output_bytes"] == total and proc["exit_code"] == 0
    out = get(raw, container, pid, "/output?offset=10")
    assert (out["offset"], out["dropped"]) == (total - RING, total - RING - 10)
    assert text_of(out) == "a" * (1 << 20)  # one read: processes.max_read_bytes
    assert out["next_offset"] == total - RING + (1 << 20)
    tail = get(raw, container, pid, f"/output?offset={total - 6}")
    assert (tail["dropped"], text_of(tail, "stdout"), tail["next_offset"]) == (0, "aaEND\n", total)
    r = raw.get(f"/v1/containers/{container}/processes/{pid}/output?offset={total + 1}")
    assert r.status_code == 400 and r.json()["error"]["param"] == "offset"


def test_input_reaches_stdin(raw: httpx2.Client, container: str) -> None:
    base = f"/v1/containers/{container}/processes"
    pid = start(raw, container, "head -n1; echo done")["id"]
    r = raw.post(f"{base}/{pid}/input", json={"data": "hello\nnot read\n"})
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "container.process.input" and r.json()["bytes"] == 15
    proc = wait_exited(raw, container, pid)
    assert proc["exit_code"] == 0
    assert text_of(get(raw, container, pid, "/output")) == "hello\ndone\n"
    r = raw.post(f"{base}/{pid}/input", json={"data": "late"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "process_exited"
    # cat ends with its input.
    pid = start(raw, container, "cat")["id"]
    raw.post(f"{base}/{pid}/input", json={"data": "a"})
    raw.post(f"{base}/{pid}/input", json={"data": "b", "eof": True})
    assert wait_exited(raw, container, pid)["exit_code"] == 0
    assert text_of(get(raw, container, pid, "/output")) == "ab"


def test_term_ends_it_with_its_status(raw: httpx2.Client, container: str) -> None:
    base = f"/v1/containers/{container}/processes"
    pid = start(raw, container, "sleep 300")["id"]
    r = raw.post(f"{base}/{pid}/signal", json={"signal": "TERM"})
    assert r.status_code == 200 and r.json()["id"] == pid
    proc = wait_exited(raw, container, pid)
    assert (proc["status"], proc["exit_code"]) == ("exited", 143)
    assert "killed" not in proc
    r = raw.post(f"{base}/{pid}/signal", json={"signal": "SIGKILL"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "process_exited"


def test_delete_kills_the_whole_group_and_nothing_is_left(
    raw: httpx2.Client, container: str
) -> None:
    pid = start(raw, container, "sleep 1001 & sleep 1002 & wait")["id"]
    deadline = time.monotonic() + 10
    while "sleep 1002" not in (seen := listed(raw, container)):
        assert time.monotonic() < deadline, seen
        time.sleep(0.05)
    assert "sleep 1001" in seen
    assert raw.delete(f"/v1/containers/{container}/processes/{pid}").status_code == 200
    deadline = time.monotonic() + 10
    while "sleep 100" in (seen := listed(raw, container)):
        assert time.monotonic() < deadline, seen
        time.sleep(0.05)
    assert raw.get(f"/v1/containers/{container}/processes").json()["data"] == []


def test_the_cap_answers_409_and_ended_processes_make_room(
    raw: httpx2.Client, container: str
) -> None:
    ended = start(raw, container, "true")["id"]
    wait_exited(raw, container, ended)
    running = [start(raw, container, "sleep 300")["id"] for _ in range(8)]  # the ended one goes
    r = raw.post(f"/v1/containers/{container}/processes", json={"command": "sleep 300"})
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["code"] == "too_many_processes" and "At most 8 " in err["message"]
    page = raw.get(f"/v1/containers/{container}/processes?limit=5&order=asc").json()
    assert [p["id"] for p in page["data"]] == running[:5] and page["has_more"] is True
    rest = raw.get(f"/v1/containers/{container}/processes?order=asc&after={page['last_id']}").json()
    assert [p["id"] for p in rest["data"]] == running[5:] and rest["has_more"] is False
    for pid in running:
        assert raw.delete(f"/v1/containers/{container}/processes/{pid}").status_code == 200
    start(raw, container, "true")


def _running_gauge(raw: httpx2.Client) -> float:
    for line in raw.get("/metrics").text.splitlines():
        if line.startswith("sandboxd_processes_running "):
            return float(line.split()[1])
    raise AssertionError("no sandboxd_processes_running")


def test_deleting_the_container_ends_its_processes_and_their_bookkeeping(
    raw: httpx2.Client, client: openai.OpenAI
) -> None:
    before = _running_gauge(raw)
    cid = client.containers.create(name="procs").id
    start(raw, cid, "sleep 300")
    assert _running_gauge(raw) == before + 1
    client.containers.delete(cid)
    deadline = time.monotonic() + 10
    while _running_gauge(raw) != before:  # the watch sees the sandbox go
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.slow
def test_an_oom_killed_process_says_so(raw: httpx2.Client, container: str) -> None:
    pid = start(raw, container, "exec python3 -c 'b = bytearray(2 * 1024**3)'")["id"]
    proc = wait_exited(raw, container, pid, within=60)
    assert proc["exit_code"] == 137
    deadline = time.monotonic() + 10
    while "killed" not in (proc := get(raw, container, pid)):  # the watch attributes it
        assert time.monotonic() < deadline, proc
        time.sleep(0.05)
    assert proc["killed"] == "oom"
    events = raw.get(f"/v1/containers/{container}/events").json()["data"]
    exited = [e["detail"] for e in events if e["type"] == "process_exited"]
    assert exited == [{"process_id": pid, "exit_code": 137, "killed": "oom"}]
    assert "oom_kill" in [e["type"] for e in events]


FORK_BOMB = """exec python3 -c '
import os, time
while True:
    try:
        if os.fork() == 0:
            time.sleep(300)
            os._exit(0)
    except OSError:
        time.sleep(0.01)
'"""


def test_a_process_that_fills_the_pids_limit_is_killed_and_the_others_run_on(
    raw: httpx2.Client, container: str
) -> None:
    server = start(raw, container, "sleep 600")["id"]
    bomb = start(raw, container, FORK_BOMB)["id"]
    # While the bomb holds every pid, the agent cannot start a thread for a new connection:
    # a call may be told the sandbox is busy then (429, worth a retry), never after.
    deadline = time.monotonic() + 60
    while True:
        r = raw.get(f"/v1/containers/{container}/processes/{bomb}")
        if r.status_code != 429 or r.json()["error"]["code"] != "sandbox_busy":
            assert r.status_code == 200, r.text
            if (proc := r.json())["status"] != "running":
                break
        assert time.monotonic() < deadline, f"{bomb} still runs"
        time.sleep(0.05)
    assert proc["exit_code"] == 137
    deadline = time.monotonic() + 10
    while "killed" not in (proc := get(raw, container, bomb)):
        assert time.monotonic() < deadline, proc
        time.sleep(0.05)
    assert proc["killed"] == "pids"
    # Its forks went with it; the other process runs on and the container works.
    assert get(raw, container, server)["status"] == "running"
    deadline = time.monotonic() + 10
    while "sleep(300)" in (seen := listed(raw, container)):
        assert time.monotonic() < deadline, seen[-300:]
        time.sleep(0.1)
    assert exec_(raw, container, "echo ok")["output"][0]["stdout"] == "ok\n"
    events = raw.get(f"/v1/containers/{container}/events").json()["data"]
    exited = [e["detail"] for e in events if e["type"] == "process_exited"]
    assert {"process_id": bomb, "exit_code": 137, "killed": "pids"} in exited
