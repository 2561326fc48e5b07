"""Background processes through the client against a real daemon (runc sandboxes): every
route, blocking and asyncio, and `follow` resuming after a lost connection."""

from __future__ import annotations

import time

import pytest
import sandboxd_client as sc

from tests.api.conftest import DaemonHandle

pytestmark = pytest.mark.root


def _text(events: list[sc.ProcessEvent], stream: str = "stdout") -> str:
    return "".join(e.data for e in events if isinstance(e, sc.ProcessChunk) and e.type == stream)


def _ended(sbx: sc.Client, cid: str, pid: str) -> sc.Process:
    deadline = time.monotonic() + 10
    while (found := sbx.processes.retrieve(cid, pid)).running:
        assert time.monotonic() < deadline, found
        time.sleep(0.05)
    return found


def test_processes_blocking(sbx: sc.Client) -> None:
    box = sbx.containers.create("procs", expires_after_minutes=5)
    try:
        echo = sbx.processes.start(
            box.id, 'echo "$GREETING"; echo err >&2; read line; echo "got $line"',
            env={"GREETING": "hi"}, working_directory="/tmp",
        )  # fmt: skip
        assert echo.id.startswith("proc_") and echo.container_id == box.id
        assert echo.running and echo.exit_code is None and echo.command.startswith("echo")
        fed = sbx.processes.write(box.id, echo.id, "x\n", eof=True)
        assert (fed.id, fed.bytes, fed.eof) == (echo.id, 2, True)
        events = list(sbx.processes.follow(box.id, echo.id))
        assert isinstance(events[0], sc.OutputStart) and events[0].offset == 0
        last = events[-1]
        assert isinstance(last, sc.ProcessExit) and last.process.exit_code == 0
        assert _text(events) == "hi\ngot x\n" and _text(events, "stderr") == "err\n"
        assert last.next_offset == last.process.output_bytes == len("hi\nerr\ngot x\n")
        # read: all of it, then from an offset; a stream of an ended process is its tail
        read = sbx.processes.read(box.id, echo.id)
        assert (read.stdout, read.stderr, read.offset, read.dropped) == (
            "hi\ngot x\n",
            "err\n",
            0,
            0,
        )
        assert read.next_offset == read.process.output_bytes and not read.process.running
        assert sbx.processes.read(box.id, echo.id, offset=7).stdout == "got x\n"
        tail = list(sbx.processes.stream(box.id, echo.id, offset=7))
        assert _text(tail) == "got x\n" and isinstance(tail[-1], sc.ProcessExit)
        # a long one: listed, signalled, ended by the signal
        sleeper = sbx.processes.start(box.id, "sleep 60")
        assert [p.id for p in sbx.processes.list(box.id)] == [echo.id, sleeper.id]
        assert sbx.processes.page(box.id, limit=1).has_more
        assert sbx.processes.retrieve(box.id, sleeper.id).running
        sbx.processes.signal(box.id, sleeper.id, "TERM")
        ended = _ended(sbx, box.id, sleeper.id)
        assert ended.exit_code == 128 + 15 and ended.ended_at is not None
        with pytest.raises(sc.ProcessExited) as exited:
            sbx.processes.signal(box.id, sleeper.id, "KILL")
        assert exited.value.status == 409 and exited.value.request_id
        with pytest.raises(sc.InvalidRequest) as bad:
            sbx.processes.signal(box.id, echo.id, "STOP")
        assert bad.value.param == "signal"
        assert sbx.processes.delete(box.id, sleeper.id).deleted
        with pytest.raises(sc.NotFound):
            sbx.processes.retrieve(box.id, sleeper.id)
    finally:
        sbx.containers.delete(box.id)


def test_too_many_processes_is_typed(sbx: sc.Client) -> None:
    box = sbx.containers.create("procs-cap", expires_after_minutes=5)
    try:
        for _ in range(8):  # processes.max_per_container
            sbx.processes.start(box.id, "sleep 60")
        with pytest.raises(sc.TooManyProcesses) as caught:
            sbx.processes.start(box.id, "sleep 60")
        assert isinstance(caught.value, sc.Conflict) and caught.value.status == 409
    finally:
        sbx.containers.delete(box.id)


def test_follow_resumes_after_a_lost_connection(daemon: DaemonHandle, sbx: sc.Client) -> None:
    """A read timeout far below the daemon's keepalive drops the stream while the process is
    quiet; `follow` reconnects at the last offset: every byte once, none twice."""
    box = sbx.containers.create("procs-follow", expires_after_minutes=5)
    try:
        started = sbx.processes.start(box.id, "echo one; sleep 1.5; echo two; echo three >&2")
        with sc.Client(socket=daemon.socket, env={}, timeout=0.3) as impatient:
            events = list(impatient.processes.follow(box.id, started.id))
        starts = [e for e in events if isinstance(e, sc.OutputStart)]
        assert len(starts) >= 2, events  # it did reconnect, at the offset it had reached
        assert len("one\n") in [s.offset for s in starts] and not any(s.dropped for s in starts)
        assert [s.offset for s in starts] == sorted(s.offset for s in starts)
        assert _text(events) == "one\ntwo\n" and _text(events, "stderr") == "three\n"
        last = events[-1]
        assert isinstance(last, sc.ProcessExit) and last.process.exit_code == 0
        # without reconnects the lost connection is the caller's
        again = sbx.processes.start(box.id, "sleep 1; echo late")
        impatient = sc.Client(socket=daemon.socket, env={}, timeout=0.3)
        with impatient, pytest.raises(sc.Timeout):
            list(impatient.processes.follow(box.id, again.id, max_reconnects=0))
    finally:
        sbx.containers.delete(box.id)


async def test_processes_asyncio(asbx: sc.AsyncClient) -> None:
    box = await asbx.containers.create("procs-async", expires_after_minutes=5)
    try:
        cat = await asbx.processes.start(box.id, "cat")
        assert [p.id async for p in asbx.processes.list(box.id)] == [cat.id]
        assert (await asbx.processes.page(box.id)).data[0].id == cat.id
        assert (await asbx.processes.write(box.id, cat.id, "echoed\n")).bytes == 7
        stream = asbx.processes.stream(box.id, cat.id)
        try:
            assert isinstance(await anext(stream), sc.OutputStart)
            chunk = await anext(stream)
            assert isinstance(chunk, sc.ProcessChunk) and chunk.data == "echoed\n"
            assert chunk.next_offset == 7
        finally:
            await stream.aclose()
        await asbx.processes.write(box.id, cat.id, "", eof=True)
        events = [e async for e in asbx.processes.follow(box.id, cat.id, offset=7)]
        last = events[-1]
        assert isinstance(last, sc.ProcessExit) and last.process.exit_code == 0
        assert _text(events) == ""
        read = await asbx.processes.read(box.id, cat.id)
        assert read.stdout == "echoed\n" and read.process.status == "exited"
        assert (await asbx.processes.retrieve(box.id, cat.id)).exit_code == 0
        sleeper = await asbx.processes.start(box.id, "sleep 60")
        killed = await asbx.processes.signal(box.id, sleeper.id, "KILL")
        assert killed.id == sleeper.id
        assert (await asbx.processes.delete(box.id, sleeper.id)).deleted
        with pytest.raises(sc.NotFound):
            await asbx.processes.read(box.id, sleeper.id)
    finally:
        await asbx.containers.delete(box.id)
