"""Attachments through the client against a real daemon (runc sandboxes): a `tty: true`
python3 REPL driven over the blocking client's attachment on the unix socket (`1+1` -> `2`,
a resize seen by the program, the exit and the close), a `cat` without a tty over the
asyncio client on TCP with a key (bytes back, EOF ends it, a read-only watcher sees the
same output and is refused input), and refusals raised before any upgrade."""

from __future__ import annotations

import asyncio
import time

import pytest
import sandboxd_client as sc

from tests.api.conftest import DaemonHandle

pytestmark = pytest.mark.root


def read_until(attachment: sc.Attachment, wanted: bytes, seen: bytearray) -> bytes:
    """Output until `wanted` is in it (control events other than output are kept aside)."""
    deadline = time.monotonic() + 30
    while wanted not in seen:
        assert time.monotonic() < deadline, f"no {wanted!r} in {bytes(seen)!r}"
        item = attachment.recv()
        assert item is not None, f"ended before {wanted!r}: {bytes(seen)!r}"
        if isinstance(item, bytes):
            seen += item
    return bytes(seen)


def test_a_tty_repl_over_the_blocking_attachment(sbx: sc.Client) -> None:
    cid = sbx.containers.create("attach-repl").id
    try:
        started = sbx.processes.start(cid, "exec python3 -q", tty=True, cols=100, rows=30)
        assert (started.tty, started.cols, started.rows) == (True, 100, 30)
        with sbx.processes.attach(cid, started.id, offset=0, timeout=30) as repl:
            first = repl.recv()
            assert isinstance(first, sc.Attached), first
            assert (first.process.id, first.offset, first.writer) == (started.id, 0, True)
            assert repl.writer
            seen = bytearray()
            read_until(repl, b">>> ", seen)
            repl.send(b"1+1\r")
            assert b"\r\n2\r\n" in read_until(repl, b"\r\n2\r\n", seen)
            resized = sbx.processes.resize(cid, started.id, 120, 40)
            assert (resized.cols, resized.rows) == (120, 40)
            repl.send(b"import os; print(os.get_terminal_size())\r")
            read_until(repl, b"columns=120, lines=40", seen)
            repl.resize(90, 20)  # the control message, this time
            repl.send(b"print(os.get_terminal_size())\r")
            read_until(repl, b"columns=90, lines=20", seen)
            repl.send(b"exit(7)\r")
            events = list(repl)
            ended = [e for e in events if isinstance(e, sc.AttachExit)]
            assert len(ended) == 1 and ended[0].exit_code == 7, events
            assert repl.exit == ended[0] and repl.close_code == 1000
            assert repl.recv() is None
        assert sbx.processes.retrieve(cid, started.id).exit_code == 7
    finally:
        sbx.containers.delete(cid)


async def test_a_pipe_process_over_the_asyncio_attachment(asbx: sc.AsyncClient) -> None:
    cid = (await asbx.containers.create("attach-cat")).id
    try:
        cat = await asbx.processes.start(cid, "exec cat")
        watcher = await asbx.processes.attach(cid, cat.id, mode="ro")
        async with await asbx.processes.attach(cid, cat.id) as writer, watcher:
            first, watched = await writer.recv(), await watcher.recv()
            assert isinstance(first, sc.Attached) and first.writer
            assert isinstance(watched, sc.Attached) and not watched.writer
            big = bytes(range(256)) * 1024  # 256 KiB: several input frames
            await writer.send(big)
            got = bytearray()
            while len(got) < len(big):
                item = await asyncio.wait_for(writer.recv(), 30)
                assert isinstance(item, bytes), item
                got += item
            assert got == big
            await watcher.send(b"not mine")  # a read-only attachment's input is refused
            refused = None
            while not isinstance(refused, sc.AttachError):
                refused = await asyncio.wait_for(watcher.recv(), 30)
                assert refused is not None
            assert refused.code == "not_writer"
            await writer.eof()
            items = [item async for item in writer]
            assert isinstance(items[-1], sc.AttachExit) and items[-1].exit_code == 0, items
            assert writer.close_code == 1000
    finally:
        await asbx.containers.delete(cid)


def test_refusals_come_before_the_upgrade(sbx: sc.Client, daemon: DaemonHandle) -> None:
    cid = sbx.containers.create("attach-refused").id
    try:
        with pytest.raises(sc.NotFound):
            sbx.processes.attach(cid, "proc_" + "0" * 32)
        done = sbx.processes.start(cid, "true")
        with pytest.raises(ValueError, match="mode"):
            sbx.processes.attach(cid, done.id, mode="rx")
        # Another owner's container is not found, as on every route.
        bob = sc.Client(url=daemon.tcp_url, api_key=daemon.keys["bob"], env={})
        with bob, pytest.raises(sc.NotFound):
            bob.processes.attach(cid, done.id)
        nowhere = sc.Client(socket="/nonexistent/sandboxd.sock", env={})
        with nowhere, pytest.raises(sc.ConnectionFailed):
            nowhere.processes.attach(cid, done.id)
    finally:
        sbx.containers.delete(cid)
