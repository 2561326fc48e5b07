"""`shell` and `attach`: this terminal joined to a process's (the API's attach WebSocket).

`shell` starts a `tty: true` process (bash -l where the sandbox has bash, else sh, or
--cmd), sized like this terminal, attaches to it from its first byte, relays until it ends,
exits with its exit code and deletes it. With a terminal on stdin, that terminal is raw
(every key goes to the remote one: Ctrl-C, Ctrl-D, Ctrl-Z are its) and is restored on every
way out; SIGWINCH resizes the remote one. With a pipe on stdin the process gets no tty: the
pipe's bytes are its stdin, closed at the pipe's end.

`attach` joins an existing process (rw, or --ro to watch). On its terminal ours is raw and
Ctrl-P Ctrl-Q detaches, leaving it running, as in docker; a process without a terminal reads
our cooked lines (Ctrl-D closes its stdin). If it ends, its exit code is ours.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import select
import signal
import termios
import tty
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from sandboxd_client import (
    Attached,
    AttachError,
    ConnectionFailed,
    Dropped,
    SandboxdError,
    Target,
    WriterChanged,
)

from daemon.clitool import processes, run
from daemon.clitool.containers import CommandError, Console, resolve

if TYPE_CHECKING:  # the HTTP stack loads when dispatch makes the client
    from sandboxd_client import AsyncAttachment, Client

# Where the sandbox has bash, a login bash (its profile, its prompt); else sh.
SHELL = "[ -x /bin/bash ] && exec /bin/bash -l; exec /bin/sh"
MAX_TERM_SIZE = 1000  # the daemon's cap on a terminal's cols and rows
DETACH = b"\x10\x11"  # Ctrl-P Ctrl-Q
READ = 64 << 10
STDIN_AHEAD = 4  # reads of stdin held while sending lags; then stdin is not read (backpressure)
EX_LOST = 69  # the attachment ended without the process ending (daemon gone)


def shell(client: Client, args: argparse.Namespace, con: Console, stdin: int, out: int) -> int:
    cid = resolve(client, args.id)
    env = dict(run.env_pair(item) for item in args.env) if args.env else None
    local_tty = os.isatty(stdin)
    cols, rows = terminal_size(out, stdin) if local_tty else (None, None)
    started = client.processes.start(
        cid, args.cmd or SHELL, env=env, tty=local_tty, cols=cols, rows=rows
    )
    try:
        # From byte 0: the first prompt may be written before the attachment opens.
        relay = Relay(client.target, stdin, out, con, raw=local_tty, detach_keys=False)
        return relay.run(cid, started.id, offset=0, read_only=False)
    finally:
        with contextlib.suppress(SandboxdError):
            client.processes.delete(cid, started.id)


def attach(client: Client, args: argparse.Namespace, con: Console, stdin: int, out: int) -> int:
    cid = resolve(client, args.id)
    pid = processes.resolve_process(client, cid, args.pid)
    # Raw only to type into a terminal: a process without one reads our cooked lines (and
    # Ctrl-D ends its stdin, Ctrl-C ends us).
    raw = os.isatty(stdin) and not args.ro and client.processes.retrieve(cid, pid).tty
    relay = Relay(client.target, stdin, out, con, raw=raw, detach_keys=raw)
    code = relay.run(cid, pid, offset=args.offset, read_only=args.ro)
    if relay.detached:
        con.error(f"detached from {pid}: it runs on (sandboxd attach {args.id} {pid})")
    return code


def terminal_size(*fds: int) -> tuple[int, int]:
    for fd in fds:
        with contextlib.suppress(OSError):
            size = os.get_terminal_size(fd)
            return max(1, min(size.columns, MAX_TERM_SIZE)), max(1, min(size.lines, MAX_TERM_SIZE))
    return 80, 24


@contextlib.contextmanager
def raw_mode(fd: int, enabled: bool) -> Iterator[None]:
    """The terminal on `fd` raw for the block, its settings restored however it ends."""
    if not enabled:
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        with contextlib.suppress(termios.error):  # a terminal that hung up keeps nothing
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class DetachKeys:
    """Finds Ctrl-P Ctrl-Q in what is typed; a lone Ctrl-P waits for the next key."""

    def __init__(self) -> None:
        self._held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(the bytes to send on, whether to detach)."""
        data, self._held = self._held + data, b""
        at = data.find(DETACH)
        if at >= 0:
            return data[:at], True
        if data.endswith(DETACH[:1]):
            data, self._held = data[:-1], DETACH[:1]
        return data, False


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [])


class Relay:
    """One attachment joined to our stdin and stdout until the process ends, we detach or a
    signal (TERM, HUP) ends us; the exit code says which."""

    def __init__(
        self,
        target: Target,
        stdin: int,
        out: int,
        con: Console,
        *,
        raw: bool,
        detach_keys: bool,
    ) -> None:
        self.target = target
        self.stdin = stdin
        self.out = out
        self.con = con
        self.raw = raw  # our terminal raw, joined to the process's: resized with it
        self.keys = DetachKeys() if detach_keys else None
        self.detached = False
        self.signalled = 0

    def run(self, cid: str, pid: str, *, offset: int | None, read_only: bool) -> int:
        with raw_mode(self.stdin, self.raw):
            return asyncio.run(self._main(cid, pid, offset, read_only))

    def _say(self, message: str) -> None:
        # In raw mode a newline does not return the carriage: say both.
        end = "\r\n" if self.raw else "\n"
        self.con.err.write(f"sandboxd: {message}{end}")
        self.con.err.flush()

    async def _main(self, cid: str, pid: str, offset: int | None, read_only: bool) -> int:
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        assert main is not None

        def ended_by(signum: int) -> None:
            self.signalled = signum
            main.cancel()

        for signum in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, ended_by, signum)
        from sandboxd_client import AsyncClient  # the asyncio side loads only here

        client = AsyncClient(
            socket=self.target.socket or None, url=self.target.url or None,
            api_key=self.target.api_key, env={}, max_retries=0,
        )  # fmt: skip
        try:
            mode = "ro" if read_only else "rw"
            async with (
                client,
                await client.processes.attach(cid, pid, offset=offset, mode=mode) as attachment,
            ):
                return await self._relay(attachment, read_only)
        except asyncio.CancelledError:
            if not self.signalled:
                raise
            return 128 + self.signalled
        finally:
            for signum in (signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(signum)

    async def _relay(self, attachment: AsyncAttachment, read_only: bool) -> int:
        first = await attachment.recv()
        if not isinstance(first, Attached):
            raise CommandError("the daemon did not open the attachment with its state")
        remote_tty = first.process.tty
        loop = asyncio.get_running_loop()
        sending: asyncio.Task[None] | None = None
        if not read_only:
            if remote_tty and self.raw:
                loop.add_signal_handler(signal.SIGWINCH, self._resize_later, attachment)
                await attachment.resize(*terminal_size(self.out, self.stdin))
            sending = asyncio.ensure_future(self._send(attachment, remote_tty))
        receiving = asyncio.ensure_future(self._receive(attachment))
        tasks = [receiving] if sending is None else [receiving, sending]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if sending in done:
                sending.result()  # it ends only at the detach keys (or with its failure)
                return 0
            receiving.result()
            return self._exit_code(attachment)
        finally:
            # Both settled before the attachment closes (which reads its last frames).
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if remote_tty and self.raw and not read_only:
                loop.remove_signal_handler(signal.SIGWINCH)

    def _resize_later(self, attachment: AsyncAttachment) -> None:
        cols, rows = terminal_size(self.out, self.stdin)
        task = asyncio.ensure_future(attachment.resize(cols, rows))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _receive(self, attachment: AsyncAttachment) -> None:
        async for item in attachment:
            if isinstance(item, bytes):
                write_all(self.out, item)
            elif isinstance(item, Dropped):
                self._say(f"{item.bytes} bytes of output were no longer kept")
            elif isinstance(item, WriterChanged) and not item.writer:
                self._say("a newer attachment writes now: our keys no longer reach it")
            elif isinstance(item, AttachError):
                self._say(f"{item.code}: {item.message}")

    async def _send(self, attachment: AsyncAttachment, remote_tty: bool) -> None:
        """Our stdin to the process until its end (then EOF, for a process without a tty)
        or the detach keys. Input for an attachment the daemon is closing is dropped: the
        process has ended, the receiving side has its exit."""
        with contextlib.suppress(ConnectionFailed):
            async for data in self._stdin():
                if self.keys is not None:
                    data, detach = self.keys.feed(data)
                    if detach:
                        if data:
                            await attachment.send(data)
                        self.detached = True
                        return
                if data:
                    await attachment.send(data)
            if not remote_tty:
                await attachment.eof()
        await asyncio.Event().wait()  # the process's end, not our stdin's, ends the relay

    async def _stdin(self) -> AsyncIterator[bytes]:
        """Our stdin's reads, then b"" at its end. At most STDIN_AHEAD reads wait for the
        sending: while they do, stdin is not watched (whoever writes it is slowed down), and
        its end is read once."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=STDIN_AHEAD)
        watching = ended = False

        def readable() -> None:
            nonlocal watching, ended
            data = _read(self.stdin)
            queue.put_nowait(data)  # never full: the watch stops when it fills
            ended = not data
            if ended or queue.full():
                loop.remove_reader(self.stdin)
                watching = False

        try:
            loop.add_reader(self.stdin, readable)
        except PermissionError:  # a regular file: always readable, a thread reads it
            while data := await asyncio.to_thread(os.read, self.stdin, READ):
                yield data
            return
        watching = True
        try:
            while data := await queue.get():
                if not (watching or ended):
                    loop.add_reader(self.stdin, readable)
                    watching = True
                yield data
        finally:
            loop.remove_reader(self.stdin)

    def _exit_code(self, attachment: AsyncAttachment) -> int:
        ended = attachment.exit
        if ended is None:
            why = "the daemon shut down" if attachment.close_code == 1001 else "it broke off"
            self._say(f"the attachment ended before the process did ({why})")
            return EX_LOST
        if ended.killed:
            self._say(f"killed: {run.KILLED.get(ended.killed, ended.killed)}")
        if ended.exit_code is None:
            return run.EX_KILLED
        return min(max(ended.exit_code, 0), 255)


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, READ)
    except OSError:
        return b""  # a terminal that went away: the same as its end
