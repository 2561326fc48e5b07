"""Terminals through the API, in real sandboxes: `tty: true` processes on a real PTY (a Python
REPL, a shell with job control, ^C, resize seen by `stty size`) driven over the attach
WebSocket; several attachments and the writer's role; replay from an offset after a
reattach; a non-tty process attached; the exit message and close codes; caps; ownership; the
container's delete ending an attachment. Validation is in tests/service/test_processes.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import pytest

from tests.api.conftest import DaemonHandle
from tests.api.test_processes import get, listed, start, wait_exited
from tests.apifixtures import assert_error

pytestmark = pytest.mark.root

UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}
WITHIN = 20.0  # seconds for anything a terminal is waited for


def run[T](coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Term:
    """One attachment: output bytes gathered, text messages kept in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, attached: dict[str, Any]) -> None:
        self.ws = ws
        self.attached = attached
        self.out = bytearray()
        self.texts: list[dict[str, Any]] = []

    async def _one(self) -> aiohttp.WSMessage:
        msg = await self.ws.receive(timeout=WITHIN)
        if msg.type == aiohttp.WSMsgType.BINARY:
            self.out += msg.data
        elif msg.type == aiohttp.WSMsgType.TEXT:
            self.texts.append(json.loads(msg.data))
        return msg

    async def until(self, needle: bytes) -> None:
        """Read until the output holds `needle` (after what was read so far)."""
        deadline = time.monotonic() + WITHIN
        while needle not in self.out:
            assert time.monotonic() < deadline, bytes(self.out[-500:])
            msg = await self._one()
            assert msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT), (msg, self.out)

    async def text(self, kind: str) -> dict[str, Any]:
        """The next text message of `kind` (output before it is gathered)."""
        while True:
            found = [t for t in self.texts if t["type"] == kind]
            if found:
                self.texts.remove(found[0])
                return found[0]
            msg = await self._one()
            assert msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT), (msg, self.out)

    async def closed(self) -> int:
        """Read to the close; its code."""
        while (msg := await self._one()).type in (
            aiohttp.WSMsgType.BINARY,
            aiohttp.WSMsgType.TEXT,
        ):
            pass
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
        code = self.ws.close_code
        assert code is not None
        return code

    async def send(self, data: bytes | dict[str, Any]) -> None:
        if isinstance(data, bytes):
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_str(json.dumps(data))


def metrics(raw: httpx2.Client) -> list[str]:
    return raw.get("/metrics").text.splitlines()


def url(cid: str, pid: str) -> str:
    return f"http://localhost/v1/containers/{cid}/processes/{pid}/attach"


@contextlib.asynccontextmanager
async def session(daemon: DaemonHandle) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=daemon.socket)) as s:
        yield s


@contextlib.asynccontextmanager
async def attach(
    s: aiohttp.ClientSession, cid: str, pid: str, **query: str | int
) -> AsyncIterator[Term]:
    async with s.ws_connect(url(cid, pid), params=query or None, max_msg_size=0) as ws:
        first = await ws.receive(timeout=WITHIN)
        assert first.type == aiohttp.WSMsgType.TEXT, first
        attached = json.loads(first.data)
        assert attached["type"] == "attached", attached
        yield Term(ws, attached)


def test_a_python_repl_on_a_terminal_answers_and_is_interrupted_by_ctrl_c(
    daemon: DaemonHandle, raw: httpx2.Client, container: str
) -> None:
    proc = start(raw, container, "python3", tty=True)
    assert (proc["tty"], proc["cols"], proc["rows"]) == (True, 80, 24)

    async def scenario() -> tuple[int, dict[str, Any]]:
        async with session(daemon) as s, attach(s, container, proc["id"], offset=0) as t:
            assert t.attached["writer"] is True and t.attached["offset"] == 0
            assert t.attached["process"]["tty"] is True
            await t.until(b">>> ")
            await t.send(b"1+1\n")
            await t.until(b"\r\n2\r\n")  # the terminal echoes the line, then the answer
            await t.send(b"import time; time.sleep(100)\n")
            await asyncio.sleep(0.5)
            await t.send(b"\x03")  # ^C: the terminal sends SIGINT to the REPL's group
            await t.until(b"KeyboardInterrupt")
            await t.send(b"import os, sys; print(os.isatty(0), sys.stdin.isatty())\n")
            await t.until(b"True True")
            await t.send(b"exit(5)\n")
            ended = await t.text("exit")
            return await t.closed(), ended

    code, ended = run(scenario())
    assert code == 1000
    assert ended["exit_code"] == 5 and ended["killed"] is None
    proc = wait_exited(raw, container, proc["id"])
    assert ended["offset"] == proc["output_bytes"]


def test_a_shell_on_a_terminal_has_job_control_resize_and_a_controlling_tty(
    daemon: DaemonHandle, raw: httpx2.Client, container: str
) -> None:
    pid = start(raw, container, "sh", tty=True, cols=100, rows=30, env={"PS1": "$ "})["id"]

    async def scenario() -> None:
        async with session(daemon) as s, attach(s, container, pid, offset=0) as t:
            await t.send(b"tty -s && test -t 0 && echo tty-$TERM; stty size\n")
            await t.until(b"tty-xterm-256color\r\n30 100\r\n")
            await t.send({"type": "resize", "cols": 132, "rows": 50})
            await t.send(b"stty size\n")
            await t.until(b"50 132\r\n")
            # SIGWINCH reaches the foreground group: a trap sees it.
            await t.send(b"trap 'echo got-winch' WINCH; kill -WINCH $$; sleep 0.2; echo x\n")
            await t.until(b"got-winch")
            await t.send(b"sleep 100 &\n")
            await t.send(b"jobs\n")
            await t.until(b"Running")
            await t.send(b"sleep 30; echo slept\n")
            deadline = time.monotonic() + WITHIN
            while "sleep 30" not in await asyncio.to_thread(listed, raw, container):
                assert time.monotonic() < deadline, "sleep 30 never ran"
                await asyncio.sleep(0.05)
            began = time.monotonic()
            await t.send(b"\x03")
            await t.send(b"echo after-int\n")
            await t.until(b"after-int\r\n")
            assert time.monotonic() - began < 10
            assert b"\nslept" not in t.out  # (the echoed line holds the word)
            await t.send({"type": "signal", "signal": "HUP"})
            assert (await t.text("exit"))["exit_code"] == 128 + 1
            assert await t.closed() == 1000

    run(scenario())
    # The route: the same resize through POST, and its refusals.
    r = raw.post(
        f"/v1/containers/{container}/processes/{pid}/resize", json={"cols": 90, "rows": 20}
    )
    assert_error(r, 409, code="process_exited")
    plain = start(raw, container, "sleep 60")["id"]
    r = raw.post(
        f"/v1/containers/{container}/processes/{plain}/resize", json={"cols": 9, "rows": 9}
    )
    assert_error(r, 400, "process_id")
    term = start(raw, container, "sleep 60", tty=True)["id"]
    r = raw.post(
        f"/v1/containers/{container}/processes/{term}/resize", json={"cols": 90, "rows": 20}
    )
    assert r.status_code == 200, r.text
    assert (r.json()["cols"], r.json()["rows"], r.json()["tty"]) == (90, 20, True)
    assert (get(raw, container, term)["cols"], get(raw, container, plain)["tty"]) == (90, False)


def test_the_newest_read_write_attachment_writes_and_all_see_the_output(
    daemon: DaemonHandle, raw: httpx2.Client, container: str
) -> None:
    pid = start(raw, container, "sh", tty=True, env={"PS1": "$ "})["id"]

    async def scenario() -> None:
        async with session(daemon) as s, attach(s, container, pid) as first:
            assert first.attached["writer"] is True
            async with (
                attach(s, container, pid) as second,
                attach(s, container, pid, mode="ro") as ro,
            ):
                assert (second.attached["writer"], ro.attached["writer"]) == (True, False)
                assert await first.text("writer") == {"type": "writer", "writer": False}
                await first.send(b"echo from-first\n")
                refused = await first.text("error")
                assert refused["code"] == "not_writer" and refused["message"]
                await ro.send({"type": "resize", "cols": 10, "rows": 10})
                assert (await ro.text("error"))["code"] == "not_writer"
                await ro.send(b"x")
                assert (await ro.text("error"))["code"] == "not_writer"
                await second.send(b"echo from-$((40+2))\n")
                for t in (first, second, ro):
                    await t.until(b"from-42")
                assert b"from-first" not in first.out + second.out + ro.out
                # Bad control messages are refused and the connection stays open.
                for bad in ('{"type": "dance"}', "[1]", "not json", '{"type": "eof"}'):
                    await second.ws.send_str(bad)
                    assert (await second.text("error"))["code"] == "invalid_message"
                await second.send({"type": "signal", "signal": "STOP"})
                assert (await second.text("error"))["code"] == "invalid_message"
            # The writer left: no one writes, the older one is not promoted.
            await first.send(b"echo again\n")
            assert (await first.text("error"))["code"] == "not_writer"

    run(scenario())


def test_a_reattach_from_its_offset_misses_nothing(
    daemon: DaemonHandle, raw: httpx2.Client, container: str
) -> None:
    command = "for i in $(seq 1 60); do echo line-$i; sleep 0.03; done"
    pid = start(raw, container, command)["id"]
    expected = b"".join(b"line-%d\n" % i for i in range(1, 61))

    async def scenario() -> None:
        async with session(daemon) as s:
            async with attach(s, container, pid, offset=0) as t:
                assert t.attached["offset"] == 0
                await t.until(b"line-5\n")
                got = bytes(t.out)
            await asyncio.sleep(0.5)  # it writes on meanwhile
            async with attach(s, container, pid, offset=len(got)) as t:
                assert t.attached["offset"] == len(got)
                ended = await t.text("exit")
                assert await t.closed() == 1000
            assert got + bytes(t.out) == expected
            assert ended == {"type": "exit", "exit_code": 0, "killed": None,
                             "offset": len(expected)}  # fmt: skip
            # Without an offset only what comes after: here nothing, then the exit at once.
            async with attach(s, container, pid) as t:
                assert t.attached["offset"] == len(expected)
                assert (await t.text("exit"))["offset"] == len(expected)
                assert await t.closed() == 1000 and not t.out

    run(scenario())


def test_a_process_without_a_terminal_is_attached_to_its_stdin_and_output(
    daemon: DaemonHandle, raw: httpx2.Client, container: str
) -> None:
    command = "while read -r x; do echo out-$x; echo err-$x >&2; done; exit 7"
    pid = start(raw, container, command)["id"]

    async def scenario() -> None:
        async with session(daemon) as s, attach(s, container, pid) as t:
            assert t.attached["process"]["tty"] is False
            await t.send(b"a\nb\n")
            await t.until(b"err-b\n")  # (two pipes: either may come first)
            await t.until(b"out-b\n")
            assert sorted(bytes(t.out).splitlines()) == [b"err-a", b"err-b", b"out-a", b"out-b"]
            await t.send({"type": "resize", "cols": 10, "rows": 10})
            assert (await t.text("error"))["code"] == "invalid_message"
            await t.send({"type": "eof"})
            ended = await t.text("exit")
            assert (ended["exit_code"], ended["killed"]) == (7, None)
            assert await t.closed() == 1000

    run(scenario())


def test_input_faster_than_the_process_reads_is_held_not_dropped(
    daemon: DaemonHandle, raw: httpx2.Client, container: str
) -> None:
    # 6 MiB while the process sleeps: the agent holds 1 MiB of it, the rest waits in the daemon
    # and in TCP until wc reads; nothing is refused, nothing lost.
    pid = start(raw, container, "sleep 2; wc -c")["id"]
    frame, frames = 32 << 10, 192

    async def scenario() -> None:
        async with session(daemon) as s, attach(s, container, pid) as t:
            began = time.monotonic()
            for i in range(frames):
                await t.send(bytes([i % 251]) * frame)
            await t.send({"type": "eof"})
            ended = await t.text("exit")
            assert ended["exit_code"] == 0, (ended, t.texts)
            assert bytes(t.out).split() == [str(frame * frames).encode()], (bytes(t.out), t.texts)
            assert [m for m in t.texts if m["type"] == "error"] == []
            assert await t.closed() == 1000
            assert time.monotonic() - began < 10

    run(scenario())


def test_another_owner_gets_404_on_attach_and_resize(daemon: DaemonHandle) -> None:
    alice, bob = (
        httpx2.Client(
            base_url=daemon.tcp_url, headers={"Authorization": f"Bearer {daemon.keys[k]}"}
        )
        for k in ("alice", "bob")
    )
    with alice, bob:
        cid = alice.post("/v1/containers", json={"name": "term-owner"}).json()["id"]
        try:
            pid = start(alice, cid, "sleep 60", tty=True)["id"]
            base = f"/v1/containers/{cid}/processes/{pid}"
            r = bob.post(f"{base}/resize", json={"cols": 10, "rows": 10})
            assert_error(r, 404, "container_id")
            assert_error(bob.get(f"{base}/attach", headers=UPGRADE), 404, "container_id")
            assert get(alice, cid, pid)["cols"] == 80  # untouched
        finally:
            alice.delete(f"/v1/containers/{cid}")


def test_the_terminal_and_attachment_caps_answer_409_and_a_big_frame_closes_1009(
    daemon: DaemonHandle, raw: httpx2.Client, container: str
) -> None:
    terms = [start(raw, container, "sleep 600", tty=True)["id"] for _ in range(4)]
    r = raw.post(f"/v1/containers/{container}/processes", json={"command": "true", "tty": True})
    err = assert_error(r, 409, code="too_many_terminals")
    assert "4" in err["message"]
    start(raw, container, "true")  # a process without a terminal still starts

    async def scenario() -> None:
        async with session(daemon) as s, contextlib.AsyncExitStack() as stack:
            for _ in range(8):
                await stack.enter_async_context(attach(s, container, terms[0], mode="ro"))
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await stack.enter_async_context(attach(s, container, terms[1]))
            assert refused.value.status == 409
            async with s.get(url(container, terms[1])) as r:  # the same as plain HTTP
                body = await r.json()
            assert r.status == 409 and body["error"]["code"] == "too_many_attachments"
            assert "8" in body["error"]["message"]
        # The daemon sees the eight go as their closes arrive.
        deadline = time.monotonic() + WITHIN
        while "sandboxd_attachments_open 0.0" not in await asyncio.to_thread(metrics, raw):
            assert time.monotonic() < deadline, "attachments still open"
            await asyncio.sleep(0.05)
        async with session(daemon) as s, attach(s, container, terms[1]) as t:
            await t.send(b"x" * (64 << 10))  # at the cap: taken
            await t.send({"type": "bogus"})
            assert (await t.text("error"))["code"] == "invalid_message"  # still open
            await t.send(b"x" * ((64 << 10) + 1))
            assert await t.closed() == 1009
        # A plain GET (no upgrade) is a 400 in our shape.
        assert_error(raw.get(url(container, terms[1]).removeprefix("http://localhost")), 400)

    run(scenario())


def test_deleting_the_container_ends_the_attachment_and_its_process(
    daemon: DaemonHandle, client: Any, raw: httpx2.Client
) -> None:
    cid = client.containers.create(name="term-delete").id
    pid = start(raw, cid, "sleep 31337", tty=True)["id"]
    assert "sleep 31337" in listed(raw, cid)

    async def scenario() -> int:
        async with session(daemon) as s, attach(s, cid, pid) as t:
            await asyncio.to_thread(client.containers.delete, cid)
            return await t.closed()

    assert run(scenario()) == 1001
    assert not [c for c in host_commands() if c.startswith(b"sleep\x0031337")]


def host_commands() -> list[bytes]:
    found = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            found.append(path.read_bytes())
    return found
