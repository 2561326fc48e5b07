"""Fault injection on every path between the API and the agent: an agent that is missing,
stalls, closes mid-frame, speaks garbage or overflows its caps, and a runtime operation that
raises. Each answers an OpenAI-shaped error with a typed code and a truthful
`x-should-retry`, within its deadline; none escapes as an untyped 500, none hangs.

The container is real; its agent is swapped for a fake one while the daemon is stopped (the
sandbox keeps running), so the restarted daemon holds no connection to the real agent.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from sandbox.execution import AGENT_GRACE_S, INTERRUPT_GRACE_S
from tests.e2e.harness import DaemonProcess
from tests.hosttraces import sandbox_dirs

pytestmark = pytest.mark.root

REPLY_TIMEOUT_S = 1.0
NO_THREAD = "The container is at its process limit: its agent had no thread for this call."
HELLO = {"v": 1, "agent": "sandboxd-agent", "python": "3.11"}


def _frame(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack(">I", len(payload)) + payload


def _json(obj: object) -> bytes:
    return _frame(b"J", json.dumps(obj).encode())


def _recv_frame(conn: socket.socket) -> tuple[bytes, bytes]:
    header = _recv_exactly(conn, 5)
    (length,) = struct.unpack(">I", header[1:])
    return header[:1], _recv_exactly(conn, length)


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _until_closed(conn: socket.socket) -> None:
    """Read (a cell's code, a kill) and never answer, until the daemon gives up."""
    while conn.recv(1 << 16):
        pass


class FakeAgent:
    """Listens where the daemon expects the sandbox's agent and misbehaves as `mode` says."""

    def __init__(self, path: Path) -> None:
        self.mode = "ok"
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(64)
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def set_mode(self, mode: str) -> None:
        """Drop every open connection (the daemon discards them from its pool), then
        misbehave as `mode` on the next ones."""
        with self._lock:
            self.mode = mode
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self._conns.clear()
        time.sleep(0.2)

    def close(self) -> None:
        self.set_mode("closed")
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError, EOFError):
            if self.mode == "stall_hello":
                _until_closed(conn)
                return
            if self.mode == "no_thread":  # instead of its hello, when the pids limit is full
                conn.sendall(_json({"error": {"code": "no_thread", "message": NO_THREAD}}))
                return
            hello = {**HELLO, "v": 99} if self.mode == "wrong_version" else HELLO
            conn.sendall(_json(hello))
            while True:
                kind, payload = _recv_frame(conn)
                request = json.loads(payload) if kind == b"J" else {}
                if not self._answer(conn, self.mode, request):
                    return

    def _answer(self, conn: socket.socket, mode: str, request: dict[str, Any]) -> bool:
        """Reply to one request as `mode` says; False once the connection is done."""
        if mode == "ok" and request.get("op") == "process_list":
            # A restarted daemon asks every sandbox for its background processes.
            conn.sendall(_json({"processes": [], "seq": 0}))
            return True
        if mode == "stall_reply":
            _until_closed(conn)
            return False
        if mode == "short_read":  # a download that stops after 10 of its 100 bytes
            conn.sendall(_json({"bytes": 100}) + _frame(b"D", b"0123456789"))
            _until_closed(conn)
            return False
        replies = {
            "close_mid_frame": _json({"ev": "exit"})[:9],
            "garbage_frame": _frame(b"Q", b"abc"),
            "bad_json": _frame(b"J", b"{not json"),
            "deep_json": _frame(b"J", b"[" * 60_000),
            "over_cap": _frame(b"O", b"x" * (int(request.get("max_output", 0)) + 1)),
            "close_mid_output": _frame(b"O", b"partial\n"),
            "unknown_error": _json({"error": {"code": "weird", "message": "odd"}}),
        }
        conn.sendall(replies[mode])
        if mode == "unknown_error":
            return True  # a well-formed reply: the connection stays usable
        if not mode.startswith("close"):
            _until_closed(conn)  # let the daemon finish sending (a cell's code) and hang up
        return False


@pytest.fixture
def faulty() -> Iterator[tuple[DaemonProcess, str, str, FakeAgent]]:
    d = DaemonProcess(agent={"reply_timeout_s": REPLY_TIMEOUT_S})
    fake: FakeAgent | None = None
    real = sock = None
    try:
        d.start()
        with d.client() as c:
            cid = c.post("/v1/containers", json={"name": "faulty"}).json()["id"]
            up = c.post(f"/v1/containers/{cid}/files", files={"file": ("f.txt", b"x" * 100)})
            fid = up.json()["id"]
        assert d.stop() == 0  # the sandbox keeps running; the next daemon has no connection
        sock = sandbox_dirs(d.root / "state")[cid] / "agent.sock"
        real = sock.with_name("agent.real")
        os.rename(sock, real)
        fake = FakeAgent(sock)
        d.start()
        yield d, cid, fid, fake
        # Recovery: the real agent back, the daemon uses it again (stale connections dropped).
        fake.close()
        sock.unlink(missing_ok=True)
        os.rename(real, sock)
        with d.client() as c:
            r = c.post(f"/v1/containers/{cid}/exec", json={"commands": ["echo back"]})
            assert r.status_code == 200, r.text
            assert r.json()["output"][0]["stdout"] == "back\n"
            assert c.delete(f"/v1/containers/{cid}").status_code == 200
        assert d.stop() == 0
        assert d.host_traces() == {k: set() for k in d.host_traces()}
    finally:
        if fake is not None:
            fake.close()
        if real is not None and sock is not None and real.exists():
            sock.unlink(missing_ok=True)
            os.rename(real, sock)
        d.cleanup()


def _check(r: httpx2.Response, status: int, code: str, retry: bool = False) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["type"]) == (code, "server_error"), error
    assert r.headers["x-should-retry"] == ("true" if retry else "false")
    assert r.headers["x-request-id"].startswith("req_")


# (fault, operation, status, code)
CASES = [
    ("stall_hello", "list", 504, "sandbox_timeout"),
    ("wrong_version", "exec", 500, "sandbox_failed"),
    ("close_mid_frame", "exec", 503, "sandbox_unavailable"),
    ("close_mid_frame", "list", 503, "sandbox_unavailable"),
    ("garbage_frame", "exec", 500, "sandbox_failed"),
    ("bad_json", "list", 500, "sandbox_failed"),
    ("deep_json", "exec", 500, "sandbox_failed"),
    ("deep_json", "code", 500, "sandbox_failed"),
    ("over_cap", "exec", 500, "sandbox_failed"),
    ("stall_reply", "list", 504, "sandbox_timeout"),
    ("stall_reply", "content", 504, "sandbox_timeout"),
    ("stall_reply", "exec", 504, "sandbox_timeout"),
    ("stall_reply", "code", 504, "sandbox_timeout"),
    ("unknown_error", "exec", 500, "sandbox_failed"),
    ("unknown_error", "sessions", 500, "sandbox_failed"),
]


def _call(c: httpx2.Client, cid: str, op: str, fid: str = "") -> httpx2.Response:
    if op == "content":
        return c.get(f"/v1/containers/{cid}/files/{fid}/content")
    if op == "list":
        return c.get(f"/v1/containers/{cid}/files")
    if op == "sessions":
        return c.get(f"/v1/containers/{cid}/code/sessions")
    if op == "code":
        return c.post(f"/v1/containers/{cid}/code", json={"code": "1", "timeout_ms": 100})
    return c.post(f"/v1/containers/{cid}/exec", json={"commands": ["true"], "timeout_ms": 100})


def test_agent_faults_answer_typed_errors(
    faulty: tuple[DaemonProcess, str, str, FakeAgent],
) -> None:
    d, cid, fid, fake = faulty
    # A command's deadline is its timeout plus the agent's grace; a cell's the interrupt's more.
    limits = {"exec": 0.1 + AGENT_GRACE_S, "code": 0.1 + INTERRUPT_GRACE_S + AGENT_GRACE_S}
    with d.client(timeout_s=max(limits.values()) + 10) as c:
        for fault, op, status, code in CASES:
            fake.set_mode(fault)
            started = time.monotonic()
            r = _call(c, cid, op, fid)
            took = time.monotonic() - started
            _check(r, status, code)
            assert "Internal error" not in r.text, (fault, op)
            if code == "sandbox_timeout":
                limit = limits.get(op, REPLY_TIMEOUT_S)
                assert limit - 0.1 < took < limit + 3, (fault, op, took)
        assert c.get("/healthz").status_code == 200

        # No thread in the agent for the call (its pids limit is full): busy, worth a retry.
        fake.set_mode("no_thread")
        r = _call(c, cid, "exec")
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "sandbox_busy"
        assert "process limit" in r.json()["error"]["message"]
        assert (r.headers["x-should-retry"], r.headers["Retry-After"]) == ("true", "1")

        # Gone mid-output, streamed: the 200 stream carries what came, then a typed error.
        fake.set_mode("close_mid_output")
        body = {"commands": ["true"], "stream": True}
        with c.stream("POST", f"/v1/containers/{cid}/exec", json=body) as s:
            assert s.status_code == 200
            events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data:")]
        assert events[0] == {"type": "stdout", "command_index": 0, "data": "partial\n"}
        assert events[-1]["type"] == "error"
        assert events[-1]["error"]["code"] == "sandbox_unavailable"

        # A download whose bytes stop coming: the connection is closed short of the
        # Content-Length (a client can tell), never a JSON error spliced into the body.
        fake.set_mode("short_read")
        with c.stream("GET", f"/v1/containers/{cid}/files/{fid}/content") as s:
            assert s.status_code == 200
            with pytest.raises(httpx2.RemoteProtocolError):
                s.read()

        # The socket missing altogether.
        fake.close()
        sock = sandbox_dirs(d.root / "state")[cid] / "agent.sock"
        sock.unlink()
        _check(_call(c, cid, "exec"), 503, "sandbox_unavailable")
        _check(_call(c, cid, "list"), 503, "sandbox_unavailable")


def test_a_runtime_operation_raising_is_typed() -> None:
    """The host refuses to make a sandbox's directory (immutable parent): the create answers
    500 `sandbox_failed`, not an untyped internal error, and leaves nothing behind."""
    d = DaemonProcess()
    sandboxes = d.root / "state" / "sandboxes"
    try:
        d.start()
        subprocess.run(["chattr", "+i", str(sandboxes)], check=True)
        try:
            with d.client() as c:
                r = c.post("/v1/containers", json={"name": "refused"})
                _check(r, 500, "sandbox_failed")
                assert c.get("/v1/containers").json()["data"] == []
        finally:
            subprocess.run(["chattr", "-i", str(sandboxes)], check=True)
        with d.client() as c:
            r = c.post("/v1/containers", json={"name": "fine"})
            assert r.status_code == 200, r.text
            assert c.delete(f"/v1/containers/{r.json()['id']}").status_code == 200
        assert d.stop() == 0
        assert d.host_traces() == {k: set() for k in d.host_traces()}
    finally:
        subprocess.run(["chattr", "-i", str(sandboxes)], check=False, capture_output=True)
        d.cleanup()
