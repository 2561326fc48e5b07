"""Daemon side of the in-sandbox agent protocol (see sandbox/agent/agent.py for the wire format).

Everything the agent says is untrusted: frames are size-capped, replies are type-checked, and
any deviation closes the connection and surfaces as AgentProtocolError. Every wait for the agent
is bounded: a reply (or room to send) within `reply_timeout_s`, else AgentTimeout; the output of
a running command or cell by the deadline its caller sets. The agent serves `connections`
operations at once; `queue` more may wait for one (at most `queue_wait_s`), and beyond that an
operation is refused with AgentBusy before anything reaches the agent.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from sandbox import pathnames
from sandbox.errors import (
    AgentBusy,
    AgentError,
    AgentProtocolError,
    AgentTimeout,
    AgentUnavailable,
)
from sandbox.spec import WORKSPACE

PROTOCOL_VERSION = 1
MAX_FRAME = 1 << 20
MAX_JSON = 64 << 10
MAX_LIST_JSON = 8 << 20  # one listing, all its frames together
LIST_PAGE = 256 << 10  # one frame of a listing (the agent pages longer ones)
FRAME_TYPES = frozenset({b"J", b"O", b"E", b"D", b"Z"})
MAX_SESSIONS = 64  # the agent's own cap
MAX_CHANGED_FILES = 1000
CODE_STATUSES = frozenset({"ok", "error", "interrupted", "died"})
MAX_PROCESSES = 32  # the agent's own caps on background processes (sandbox/agent/processes.py)
MAX_PROCESS_INPUT = 1 << 20
MAX_WAIT_MS = 60000
MAX_TERM_SIZE = 1000  # columns or rows of a process's terminal


@dataclass(frozen=True)
class AgentLimits:
    """How one sandbox's agent is shared (see the module docstring)."""

    connections: int = 16
    queue: int = 64
    queue_wait_s: float = 30.0
    reply_timeout_s: float = 30.0


@dataclass(frozen=True)
class AgentFile:
    path: str
    bytes: int
    mtime: float


@dataclass(frozen=True)
class FileListing:
    files: list[AgentFile]
    truncated: bool  # more files exist than were listed
    ordered: bool  # in byte order of the paths: a truncated listing holds all up to its last


@dataclass(frozen=True)
class ExecExit:
    exit_code: int
    signal: int | None
    timed_out: bool
    truncated: bool
    killed: str | None
    duration_ms: int


@dataclass(frozen=True)
class ExecChunk:
    stream: str  # "stdout" | "stderr"
    data: bytes


@dataclass(frozen=True)
class CodeError:
    name: str
    value: str
    traceback: str


@dataclass(frozen=True)
class CodeResult:
    """How one cell ended, as the agent tells it (see handle_code in sandbox/agent/sessions.py)."""

    status: str  # ok | error | interrupted (by us; state kept) | died (state lost)
    stop: str | None  # why we interrupted or killed it: timeout, pids, shutdown, deleted...
    exit_code: int | None  # of a died interpreter
    signal: int | None
    result: str | None
    result_truncated: bool
    error: CodeError | None
    truncated: bool  # output cap hit
    restarted: bool  # this call started a new interpreter: the previous one died
    restart_reason: str | None
    files: list[AgentFile]  # created or changed by the call (mtime 0: not reported)
    files_truncated: bool
    removed: list[str]  # paths the call removed (best effort; API form)
    duration_ms: int


@dataclass(frozen=True)
class CodeSession:
    id: str
    created_at: int
    last_used_at: int
    status: str  # idle | busy | dead


@dataclass(frozen=True)
class AgentProcess:
    """A background process as the agent keeps it (see sandbox/agent/processes.py)."""

    id: str
    command: str
    running: bool
    exit_code: int | None  # 128 + n for a death by signal n, as exec reports it
    signal: int | None
    created_at: int
    ended_at: int | None
    output_bytes: int  # every byte it wrote (stdout and stderr), the ring's end offset
    retained_from: int  # the offset of the oldest byte the ring still holds
    size: tuple[int, int] | None = None  # (cols, rows) of its terminal; None: no terminal


@dataclass(frozen=True)
class OutputStart:
    """Where an output read begins: `offset`, after `dropped` bytes the ring no longer had
    (also sent mid-stream, when a slow reader falls behind the ring)."""

    offset: int
    dropped: int


@dataclass(frozen=True)
class OutputEnd:
    next_offset: int  # where the next read continues
    process: AgentProcess


@dataclass(frozen=True)
class PortStream:
    """A relayed TCP connection inside the sandbox (AgentClient.port): raw bytes both ways."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


class AgentConnection:
    """One framed stream to the agent; not shared between concurrent operations.

    Every read and write waits at most `reply_timeout_s` (AgentTimeout), except the reads of a
    command's or cell's events, which its caller bounds with the command's own deadline."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reply_timeout_s: float
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._timeout = reply_timeout_s
        self.broken = False

    async def send_frame(self, kind: bytes, payload: bytes = b"") -> None:
        if self.broken:
            raise AgentUnavailable("agent connection closed")
        try:
            self._writer.write(kind + struct.pack(">I", len(payload)) + payload)
            async with asyncio.timeout(self._timeout):
                await self._writer.drain()
        except ConnectionError as exc:
            raise AgentUnavailable("agent connection closed") from exc
        except TimeoutError as exc:
            self.close()
            raise AgentTimeout("the agent did not take the request in time") from exc

    async def send_json(self, obj: Mapping[str, Any]) -> None:
        await self.send_frame(b"J", json.dumps(obj, separators=(",", ":")).encode())

    async def recv_frame(
        self, max_json: int = MAX_JSON, *, bounded: bool = True
    ) -> tuple[bytes, bytes]:
        """The next frame; within `reply_timeout_s` unless not `bounded`."""
        try:
            async with asyncio.timeout(self._timeout if bounded else None):
                header = await self._reader.readexactly(5)
                kind = header[:1]
                (length,) = struct.unpack(">I", header[1:])
                if kind not in FRAME_TYPES:
                    raise AgentProtocolError(f"unknown frame type {kind!r}")
                if length > MAX_FRAME or (kind == b"J" and length > max_json):
                    raise AgentProtocolError("agent frame exceeds the size cap")
                payload = await self._reader.readexactly(length) if length else b""
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise AgentUnavailable("agent connection closed") from exc
        except TimeoutError as exc:
            self.close()
            raise AgentTimeout("the agent did not answer in time") from exc
        return kind, payload

    async def recv_json(self, max_json: int = MAX_JSON) -> dict[str, Any]:
        kind, payload = await self.recv_frame(max_json)
        if kind != b"J":
            raise AgentProtocolError("expected a JSON frame from the agent")
        return decode_json(payload)

    @contextlib.asynccontextmanager
    async def exec(
        self, request: Mapping[str, Any], stdin: bytes = b""
    ) -> AsyncIterator[EventStream[ExecExit]]:
        """Start a command; its events follow. Unfinished, the connection is closed (the
        agent kills the command when its connection drops)."""
        await self.send_json({"op": "exec", **request, "stdin_bytes": len(stdin)})
        await _send_data(self, stdin)
        stream = EventStream(self, int(request["max_output"]), parse_exit)
        try:
            yield stream
        finally:
            if not stream.finished:
                self.close()

    @contextlib.asynccontextmanager
    async def code(
        self, request: Mapping[str, Any], code: bytes
    ) -> AsyncIterator[EventStream[CodeResult]]:
        """Run a cell in a session: {"session", "timeout_ms", "max_output", "max_sessions"}.
        Unfinished, the connection is closed (the agent then interrupts the cell)."""
        await self.send_json({"op": "code", **request, "code_bytes": len(code)})
        await _send_data(self, code)
        stream = EventStream(self, int(request["max_output"]), parse_code, MAX_FRAME)
        try:
            yield stream
        finally:
            if not stream.finished:
                self.close()

    @property
    def reader(self) -> asyncio.StreamReader:
        return self._reader

    @property
    def writer(self) -> asyncio.StreamWriter:
        return self._writer

    def stale(self) -> bool:
        """Closed by us, or by the agent while it sat idle in the pool."""
        return self.broken or self._reader.at_eof() or self._writer.is_closing()

    def close(self) -> None:
        self.broken = True
        self._writer.close()


def decode_json(payload: bytes) -> dict[str, Any]:
    try:
        msg = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise AgentProtocolError("agent sent invalid JSON") from exc
    if not isinstance(msg, dict):
        raise AgentProtocolError("agent sent a non-object")
    return msg


def raise_if_error(msg: Mapping[str, Any]) -> None:
    err = msg.get("error")
    if err is None:
        return
    if not isinstance(err, dict):
        raise AgentProtocolError("malformed agent error")
    code, message = err.get("code"), err.get("message")
    raise AgentError(str(code)[:64], str(message)[:512])


class AgentClient:
    """A small pool of connections to one sandbox's agent, with a bounded queue for it."""

    def __init__(self, socket_path: Path, limits: AgentLimits) -> None:
        self._path = socket_path
        self._limits = limits
        self._idle: list[AgentConnection] = []
        self._slots = asyncio.Semaphore(limits.connections)
        self._queued = 0
        self._closed = False

    async def _open(self) -> AgentConnection:
        try:
            reader, writer = await asyncio.open_unix_connection(str(self._path), limit=MAX_FRAME)
        except OSError as exc:
            raise AgentUnavailable(f"cannot reach the sandbox agent: {exc.strerror}") from exc
        conn = AgentConnection(reader, writer, self._limits.reply_timeout_s)
        try:
            hello = await conn.recv_json()
            raise_if_error(hello)  # e.g. no_thread: the sandbox's pids limit is full
            if hello.get("v") != PROTOCOL_VERSION or hello.get("agent") != "sandboxd-agent":
                raise AgentProtocolError("agent speaks an unsupported protocol version")
        except BaseException:
            conn.close()
            raise
        return conn

    async def adopt(self, sock: socket.socket) -> None:
        """Keep a connection that has already had its hello (see hand_over_work_group) for
        the next operation; the socket is ours from now on, even if this fails."""
        try:
            sock.settimeout(None)
            reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_FRAME)
        except OSError:
            sock.close()
            return  # only a head start lost: the next operation connects
        conn = AgentConnection(reader, writer, self._limits.reply_timeout_s)
        if self._closed:
            conn.close()
        else:
            self._idle.append(conn)

    async def _acquire(self) -> None:
        """A connection slot: at once if one is free, else after a bounded wait in a bounded
        queue; AgentBusy otherwise."""
        if not self._slots.locked():
            await self._slots.acquire()  # free: returns without waiting
            return
        limits = self._limits
        if self._queued >= limits.queue:
            raise AgentBusy(
                f"all {limits.connections} agent connections are busy and "
                f"{limits.queue} operations wait for one"
            )
        self._queued += 1
        try:
            async with asyncio.timeout(limits.queue_wait_s):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise AgentBusy(
                f"no agent connection became free within {limits.queue_wait_s} s"
            ) from exc
        finally:
            self._queued -= 1

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AgentConnection]:
        """Lease a connection; it returns to the pool only if the operation completed."""
        if self._closed:
            raise AgentUnavailable("sandbox is closed")
        await self._acquire()
        try:
            conn = self._idle_connection() or await self._open()
            ok = False
            try:
                yield conn
                ok = True
            finally:
                if ok and not self._closed and not conn.broken:
                    self._idle.append(conn)
                else:
                    conn.close()
        finally:
            self._slots.release()

    def _idle_connection(self) -> AgentConnection | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.stale():
                return conn
            conn.close()
        return None

    async def wait_ready(self, within_s: float) -> None:
        """Wait until the agent accepts connections and answers a ping."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while True:
            try:
                await self.ping()
                return
            except AgentUnavailable:
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(0.002)

    async def ping(self) -> None:
        async with self.connection() as conn:
            await conn.send_json({"op": "ping"})
            raise_if_error(await conn.recv_json())

    async def list_files(self, root: str, max_entries: int) -> FileListing:
        """Regular files under `root`, at most `max_entries` (and MAX_LIST_JSON bytes of
        listing), paged by the agent; paths in API form (sandbox/pathnames.py)."""
        prefix = root.rstrip("/") + "/"
        files: list[AgentFile] = []
        received = 0
        async with self.connection() as conn:
            await conn.send_json(
                {"op": "list", "root": root, "max_entries": max_entries,
                 "max_bytes": MAX_LIST_JSON, "page_bytes": LIST_PAGE}
            )  # fmt: skip
            while True:
                kind, payload = await conn.recv_frame(MAX_FRAME)
                received += len(payload)
                if kind != b"J" or received > MAX_LIST_JSON + MAX_FRAME:
                    raise AgentProtocolError("malformed file list")
                msg = decode_json(payload)
                raise_if_error(msg)
                raw = msg.get("files")
                if not isinstance(raw, list) or len(files) + len(raw) > max_entries:
                    raise AgentProtocolError("malformed file list")
                files.extend(_listed_file(item, prefix) for item in raw)
                if msg.get("more") is not True:  # an agent that does not page sends one frame
                    break
        truncated = msg.get("truncated")
        if not isinstance(truncated, bool):
            raise AgentProtocolError("malformed file list")
        return FileListing(files, truncated, msg.get("ordered") is True)

    @contextlib.asynccontextmanager
    async def read_file(
        self, path: str, max_bytes: int
    ) -> AsyncIterator[tuple[int, AsyncIterator[bytes]]]:
        """Open a file for streaming: (size, chunks); AgentError (not_found...) before any byte."""
        async with self.connection() as conn:
            await conn.send_json(
                {"op": "read", "path": pathnames.from_api(path), "max_bytes": max_bytes}
            )
            head = await conn.recv_json()
            raise_if_error(head)
            size = head.get("bytes")
            if not isinstance(size, int) or not 0 <= size <= max_bytes:
                raise AgentProtocolError("malformed read reply")

            done = False

            async def chunks() -> AsyncIterator[bytes]:
                nonlocal done
                received = 0
                while True:
                    kind, payload = await conn.recv_frame()
                    if kind == b"Z":
                        done = True
                        return
                    if kind != b"D":
                        raise AgentProtocolError("expected file data")
                    received += len(payload)
                    if received > max_bytes:
                        raise AgentProtocolError("agent sent more than the cap")
                    yield payload

            yield size, chunks()
            if not done:
                conn.close()  # unread data in flight: this connection cannot be reused

    async def write_file(
        self, directory: str, name: str, data: AsyncIterator[bytes], max_bytes: int
    ) -> tuple[str, int]:
        """Stream `data` into a new file; returns (final path, size)."""
        async with self.connection() as conn:
            await conn.send_json(
                {"op": "write", "dir": directory, "name": pathnames.from_api(name),
                 "max_bytes": max_bytes}
            )  # fmt: skip
            ready = await conn.recv_json()
            raise_if_error(ready)
            async for chunk in data:
                for start in range(0, len(chunk), MAX_FRAME):
                    await conn.send_frame(b"D", chunk[start : start + MAX_FRAME])
            await conn.send_frame(b"Z")
            msg = await conn.recv_json()
        raise_if_error(msg)
        path, size = msg.get("path"), msg.get("bytes")
        if not isinstance(path, str) or not isinstance(size, int):
            raise AgentProtocolError("malformed write reply")
        return _api_path(path), size

    async def configure(self, env: Mapping[str, str], egress_socket: str | None) -> None:
        """Environment for every later command; with `egress_socket`, start the relay from
        127.0.0.1:3128 inside the sandbox to that (in-sandbox) unix socket path."""
        async with self.connection() as conn:
            await conn.send_json(
                {"op": "configure", "env": dict(env), "egress_socket": egress_socket}
            )
            msg = await conn.recv_json()
        raise_if_error(msg)
        if egress_socket is not None and msg.get("egress") is not True:
            raise AgentProtocolError("the agent did not start its egress relay")

    async def delete_file(self, path: str) -> None:
        async with self.connection() as conn:
            await conn.send_json({"op": "delete", "path": pathnames.from_api(path)})
            msg = await conn.recv_json()
        raise_if_error(msg)

    async def sessions(self) -> list[CodeSession]:
        async with self.connection() as conn:
            await conn.send_json({"op": "sessions"})
            msg = await conn.recv_json()
        raise_if_error(msg)
        raw = msg.get("sessions")
        if not isinstance(raw, list) or len(raw) > MAX_SESSIONS:
            raise AgentProtocolError("malformed session list")
        sessions = []
        for item in raw:
            if not isinstance(item, dict):
                raise AgentProtocolError("malformed session")
            sid, created, used = item.get("id"), item.get("created_at"), item.get("last_used_at")
            status = item.get("status")
            if (
                not _is_session_id(sid)
                or not isinstance(created, int)
                or not isinstance(used, int)
                or status not in ("idle", "busy", "dead")
            ):
                raise AgentProtocolError("malformed session")
            sessions.append(CodeSession(sid, created, used, status))
        return sessions

    async def delete_session(self, session_id: str) -> None:
        """AgentError("session_not_found") if there is no such session."""
        async with self.connection() as conn:
            await conn.send_json({"op": "session_delete", "session": session_id})
            msg = await conn.recv_json()
        raise_if_error(msg)

    async def _call(self, request: Mapping[str, Any], max_json: int = MAX_JSON) -> dict[str, Any]:
        """One request, one J reply (an error reply raised as AgentError)."""
        async with self.connection() as conn:
            await conn.send_json(request)
            msg = await conn.recv_json(max_json)
        raise_if_error(msg)
        return msg

    async def start_process(self, request: Mapping[str, Any]) -> AgentProcess:
        """{"id", "cmd", "env", "cwd", "ring_bytes", "max_processes"}: start a background
        process (AgentError too_many_processes when the running ones fill the table)."""
        msg = await self._call({"op": "process_start", **request}, MAX_FRAME)
        return parse_process(msg.get("process"))

    async def processes(self) -> list[AgentProcess]:
        """Every process the agent keeps, oldest first."""
        msg = await self._call({"op": "process_list"}, MAX_FRAME)
        return _process_list(msg)

    async def process(self, pid: str) -> AgentProcess:
        msg = await self._call({"op": "process_get", "id": pid}, MAX_FRAME)
        return parse_process(msg.get("process"))

    async def signal_process(self, pid: str, signum: int) -> AgentProcess:
        msg = await self._call({"op": "process_signal", "id": pid, "signal": signum}, MAX_FRAME)
        return parse_process(msg.get("process"))

    async def resize_process(self, pid: str, cols: int, rows: int) -> AgentProcess:
        """A terminal's new size (AgentError not_a_terminal for a process without one)."""
        msg = await self._call(
            {"op": "process_resize", "id": pid, "cols": cols, "rows": rows}, MAX_FRAME
        )
        return parse_process(msg.get("process"))

    async def kill_pids_culprit(self) -> str | None:
        """The sandbox hit its pids limit: the agent kills the background process behind it,
        if one of them is (the one whose session holds the most tasks); its id, or None."""
        msg = await self._call({"op": "process_pids_hit"})
        killed = msg.get("killed")
        if not (killed is None or _is_process_id(killed)):
            raise AgentProtocolError("malformed pids_hit reply")
        return killed

    async def delete_process(self, pid: str) -> None:
        await self._call({"op": "process_delete", "id": pid})

    async def process_input(self, pid: str, data: bytes, eof: bool) -> int:
        """Queue `data` for the process's stdin (closed after it with `eof`); the bytes still
        waiting for the process to read them."""
        if len(data) > MAX_PROCESS_INPUT:
            raise ValueError("input exceeds the agent's cap")
        async with self.connection() as conn:
            await conn.send_json(
                {"op": "process_input", "id": pid, "data_bytes": len(data), "eof": eof}
            )
            await _send_data(conn, data)
            msg = await conn.recv_json()
        raise_if_error(msg)
        pending = msg.get("pending")
        if not isinstance(pending, int) or not 0 <= pending <= MAX_PROCESS_INPUT:
            raise AgentProtocolError("malformed input reply")
        return pending

    async def wait_processes(self, since: int, timeout_ms: int) -> tuple[int, list[AgentProcess]]:
        """(sequence, processes) once the agent's process table differs from `since` (a
        start, an exit, a delete), or after `timeout_ms` (at most MAX_WAIT_MS)."""
        timeout_ms = min(timeout_ms, MAX_WAIT_MS)
        async with self.connection() as conn:
            await conn.send_json({"op": "process_wait", "since": since, "timeout_ms": timeout_ms})
            async with asyncio.timeout(timeout_ms / 1000 + self._limits.reply_timeout_s):
                kind, payload = await conn.recv_frame(MAX_FRAME, bounded=False)
        if kind != b"J":
            raise AgentProtocolError("expected a JSON frame from the agent")
        msg = decode_json(payload)
        raise_if_error(msg)
        seq = msg.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise AgentProtocolError("malformed process wait reply")
        return seq, _process_list(msg)

    @contextlib.asynccontextmanager
    async def process_output(
        self, pid: str, offset: int, max_bytes: int, follow: bool
    ) -> AsyncIterator[AsyncIterator[OutputStart | ExecChunk | OutputEnd]]:
        """The process's output from `offset`: an OutputStart, then chunks (contiguous from
        its offset; another OutputStart where a follower fell behind the ring), then one
        OutputEnd. At most `max_bytes`, or (`follow`) until the process has ended; a follow
        has no deadline of its own, its caller bounds it. Unfinished, the connection closes
        (the agent's follower notices within a second)."""
        async with self.connection() as conn:
            await conn.send_json(
                {"op": "process_output", "id": pid, "offset": offset, "max_bytes": max_bytes,
                 "follow": follow}
            )  # fmt: skip
            head = await conn.recv_json()
            raise_if_error(head)
            first = _output_start(head, "head")
            done = False

            async def events() -> AsyncIterator[OutputStart | ExecChunk | OutputEnd]:
                nonlocal done
                yield first
                at, budget = first.offset, max_bytes
                while True:
                    kind, payload = await conn.recv_frame(MAX_FRAME, bounded=not follow)
                    if kind in (b"O", b"E"):
                        budget -= len(payload)
                        if budget < 0 and not follow:
                            raise AgentProtocolError("agent sent more output than asked")
                        at += len(payload)
                        yield ExecChunk("stdout" if kind == b"O" else "stderr", payload)
                        continue
                    if kind != b"J":
                        raise AgentProtocolError("unexpected frame in process output")
                    msg = decode_json(payload)
                    raise_if_error(msg)
                    if msg.get("ev") == "gap":
                        gap = _output_start(msg, "gap")
                        if gap.offset != at + gap.dropped:
                            raise AgentProtocolError("malformed output gap")
                        at = gap.offset
                        yield gap
                        continue
                    end = msg.get("next_offset")
                    if msg.get("ev") != "end" or end != at:
                        raise AgentProtocolError("malformed output end")
                    done = True
                    yield OutputEnd(at, parse_process(msg.get("process")))
                    return

            yield events()
            if not done:
                conn.close()  # frames may be in flight: this connection cannot be reused

    @contextlib.asynccontextmanager
    async def port(self, port: int, connect_timeout_ms: int) -> AsyncIterator[PortStream]:
        """A TCP connection to 127.0.0.1:`port` inside the sandbox, its bytes carried raw by
        one agent connection (AgentError port_refused / port_timeout / port_failed). The
        connection is used up by it: closed on the way out, never pooled again."""
        async with self.connection() as conn:
            await conn.send_json(
                {"op": "port_connect", "port": port, "timeout_ms": connect_timeout_ms}
            )
            try:
                async with asyncio.timeout(
                    connect_timeout_ms / 1000 + self._limits.reply_timeout_s
                ):
                    kind, payload = await conn.recv_frame(bounded=False)
            except BaseException:
                conn.close()
                raise
            if kind != b"J":
                conn.close()
                raise AgentProtocolError("expected a JSON frame from the agent")
            msg = decode_json(payload)
            raise_if_error(msg)  # refused: the agent stays framed, the connection reusable
            try:
                yield PortStream(conn.reader, conn.writer)
            finally:
                conn.close()

    async def close(self) -> None:
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()


def hand_over_work_group(
    socket_path: Path, mode: str, fds: tuple[int, ...], timeout_s: float = 10.0
) -> socket.socket:
    """Give the agent the cgroup files that put what it starts into the sandbox's work group
    (the `cgroup` op; see sandbox.cgroups.WorkGroup). Descriptors cannot travel over asyncio's
    streams, so this is one blocking connection of its own: call it off the event loop. The
    connection, still open, is the caller's (AgentClient.adopt keeps it for the next call)."""

    def recv_json(sock: socket.socket) -> dict[str, Any]:
        header = _recv_exactly(sock, 5)
        (length,) = struct.unpack(">I", header[1:])
        if header[:1] != b"J" or length > MAX_JSON:
            raise AgentProtocolError("expected a JSON frame from the agent")
        return decode_json(_recv_exactly(sock, length))

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout_s)
        sock.connect(str(socket_path))
        hello = recv_json(sock)
        if hello.get("v") != PROTOCOL_VERSION:
            raise AgentProtocolError("agent speaks an unsupported protocol version")
        payload = json.dumps({"op": "cgroup", "mode": mode}).encode()
        sock.sendall(b"J" + struct.pack(">I", len(payload)) + payload)
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        sock.sendmsg([b"C"], rights)
        raise_if_error(recv_json(sock))
    except (OSError, EOFError) as exc:
        sock.close()
        raise AgentUnavailable(f"cannot hand the agent its cgroup: {exc}") from exc
    except BaseException:
        sock.close()
        raise
    return sock


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("agent closed the connection")
        buf += chunk
    return bytes(buf)


async def _send_data(conn: AgentConnection, data: bytes) -> None:
    """Payload that follows a request as D frames up to Z (nothing at all when empty)."""
    if data:
        for start in range(0, len(data), MAX_FRAME):
            await conn.send_frame(b"D", data[start : start + MAX_FRAME])
        await conn.send_frame(b"Z")


class EventStream[T]:
    """Events of one running command or cell: ExecChunk..., then one final T."""

    def __init__(
        self,
        conn: AgentConnection,
        max_output: int,
        parse: Callable[[Mapping[str, Any]], T],
        max_json: int = MAX_JSON,
    ) -> None:
        self._conn = conn
        self._budget = max_output
        self._parse = parse
        self._max_json = max_json
        self.finished = False

    async def next_event(self) -> ExecChunk | T:
        kind, payload = await self._conn.recv_frame(self._max_json, bounded=False)
        if kind in (b"O", b"E"):
            self._budget -= len(payload)
            if self._budget < 0:
                raise AgentProtocolError("agent sent more output than the cap")
            return ExecChunk("stdout" if kind == b"O" else "stderr", payload)
        if kind != b"J":
            raise AgentProtocolError("unexpected frame in the output stream")
        msg = decode_json(payload)
        raise_if_error(msg)
        self.finished = True
        return self._parse(msg)

    async def kill(self, reason: str) -> None:
        await self._conn.send_json({"op": "kill", "reason": reason})

    async def interrupt(self, reason: str) -> None:
        """Cells only: KeyboardInterrupt first, the kill after the agent's grace."""
        await self._conn.send_json({"op": "interrupt", "reason": reason})


def parse_exit(msg: Mapping[str, Any]) -> ExecExit:
    code, sig = msg.get("exit_code"), msg.get("signal")
    timed_out, truncated = msg.get("timed_out"), msg.get("truncated")
    killed, duration = msg.get("killed"), msg.get("duration_ms")
    if (
        msg.get("ev") != "exit"
        or not isinstance(code, int)
        or not (sig is None or isinstance(sig, int))
        or not isinstance(timed_out, bool)
        or not isinstance(truncated, bool)
        or not (killed is None or isinstance(killed, str))
        or not isinstance(duration, int)
    ):
        raise AgentProtocolError("malformed exec result")
    return ExecExit(code, sig, timed_out, truncated, killed[:32] if killed else None, duration)


def _is_session_id(value: object) -> TypeGuard[str]:
    return (
        isinstance(value, str)
        and 0 < len(value) <= 64
        and all(c.isascii() and (c.isalnum() or c in "_-") for c in value)
    )


def _flag(msg: Mapping[str, Any], key: str) -> bool:
    value = msg.get(key)
    if not isinstance(value, bool):
        raise AgentProtocolError(f"malformed code result ({key})")
    return value


def _opt_int(msg: Mapping[str, Any], key: str) -> int | None:
    value = msg.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise AgentProtocolError(f"malformed code result ({key})")
    return value


def _opt_str(msg: Mapping[str, Any], key: str, cap: int) -> str | None:
    value = msg.get(key)
    if value is not None and not isinstance(value, str):
        raise AgentProtocolError(f"malformed code result ({key})")
    return value[:cap] if value is not None else None


def _reason(msg: Mapping[str, Any], key: str) -> str | None:
    """An optional short reason code (`timeout`, `killed`, ...)."""
    value = _opt_str(msg, key, 1 << 10)
    if value is not None and not (0 < len(value) <= 32 and value.isascii()):
        raise AgentProtocolError(f"malformed code result ({key})")
    return value


def _api_path(path: object, prefix: str = WORKSPACE + "/") -> str:
    """An agent's path (surrogate-escaped, under `prefix`) in API form, or a protocol error."""
    if isinstance(path, str) and path.startswith(prefix) and "\0" not in path:
        try:
            return pathnames.to_api(path)
        except ValueError:
            pass
    raise AgentProtocolError("malformed path")


def _listed_file(item: object, prefix: str) -> AgentFile:
    if isinstance(item, dict):
        size, mtime = item.get("bytes"), item.get("mtime")
        if isinstance(size, int) and size >= 0 and isinstance(mtime, int | float):
            return AgentFile(_api_path(item.get("path"), prefix), size, float(mtime))
    raise AgentProtocolError("malformed file entry")


def _changed_file(item: object) -> AgentFile:
    if isinstance(item, dict):
        size = item.get("bytes")
        if isinstance(size, int) and size >= 0:
            return AgentFile(_api_path(item.get("path")), size, 0.0)
    raise AgentProtocolError("malformed changed file")


def parse_code(msg: Mapping[str, Any]) -> CodeResult:
    status, error, files, duration = (
        msg.get("status"), msg.get("exception"), msg.get("files"), msg.get("duration_ms")
    )  # fmt: skip
    removed = msg.get("removed", [])  # agents before it was reported: none
    if (
        msg.get("ev") != "code"
        or status not in CODE_STATUSES
        or not isinstance(duration, int)
        or not isinstance(files, list)
        or len(files) > MAX_CHANGED_FILES
        or not isinstance(removed, list)
        or len(removed) > MAX_CHANGED_FILES
    ):
        raise AgentProtocolError("malformed code result")
    err = None
    if error is not None:
        if not isinstance(error, dict):
            raise AgentProtocolError("malformed code error")
        name, value, tb = (_opt_str(error, k, 64 << 10) for k in ("name", "value", "traceback"))
        if name is None or value is None or tb is None:
            raise AgentProtocolError("malformed code error")
        err = CodeError(name[:200], value[: 8 << 10], tb)
    return CodeResult(
        status=status,
        stop=_reason(msg, "stop"),
        exit_code=_opt_int(msg, "exit_code"),
        signal=_opt_int(msg, "signal"),
        result=_opt_str(msg, "result", 16 << 10),
        result_truncated=_flag(msg, "result_truncated"),
        error=err,
        truncated=_flag(msg, "truncated"),
        restarted=_flag(msg, "restarted"),
        restart_reason=_reason(msg, "restart_reason"),
        files=[_changed_file(item) for item in files],
        files_truncated=_flag(msg, "files_truncated"),
        removed=[_api_path(p) for p in removed],
        duration_ms=duration,
    )


def _nonneg(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse_process(item: object) -> AgentProcess:
    """A process object of the agent's, checked (it is untrusted)."""
    if not isinstance(item, dict):
        raise AgentProtocolError("malformed process")
    pid, command, status = item.get("id"), item.get("command"), item.get("status")
    code, sig, created = item.get("exit_code"), item.get("signal"), item.get("created_at")
    ended, size, kept = item.get("ended_at"), item.get("output_bytes"), item.get("retained_from")
    term = _terminal(item)
    if (
        not _is_process_id(pid)
        or not isinstance(command, str)
        or len(command) > 1 << 16
        or status not in ("running", "exited")
        or not (code is None or isinstance(code, int))
        or not (sig is None or isinstance(sig, int))
        or not _nonneg(created)
        or not (ended is None or _nonneg(ended))
        or not _nonneg(size)
        or not _nonneg(kept)
        or kept > size
    ):
        raise AgentProtocolError("malformed process")
    running = status == "running"
    return AgentProcess(
        pid, command, running, None if running else code, sig, created, ended, size, kept, term
    )


def _terminal(item: Mapping[str, Any]) -> tuple[int, int] | None:
    """(cols, rows) of a process object's terminal, or None (an agent before terminals says
    nothing of them)."""
    if item.get("tty", False) is False:
        return None
    cols, rows = item.get("cols"), item.get("rows")
    if (
        item.get("tty") is not True
        or not (_nonneg(cols) and 0 < cols <= MAX_TERM_SIZE)
        or not (_nonneg(rows) and 0 < rows <= MAX_TERM_SIZE)
    ):
        raise AgentProtocolError("malformed process")
    return cols, rows


def _process_list(msg: Mapping[str, Any]) -> list[AgentProcess]:
    raw = msg.get("processes")
    if not isinstance(raw, list) or len(raw) > MAX_PROCESSES:
        raise AgentProtocolError("malformed process list")
    return [parse_process(item) for item in raw]


def _output_start(msg: Mapping[str, Any], ev: str) -> OutputStart:
    offset, dropped = msg.get("offset"), msg.get("dropped")
    if msg.get("ev") != ev or not _nonneg(offset) or not _nonneg(dropped):
        raise AgentProtocolError("malformed process output")
    return OutputStart(offset, dropped)


def _is_process_id(value: object) -> TypeGuard[str]:
    return (
        isinstance(value, str)
        and 0 < len(value) <= 64
        and all(c.isascii() and (c.isdigit() or c.islower() or c == "_") for c in value)
    )
