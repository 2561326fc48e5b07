"""Run one command, or one cell of a code session, in a sandbox through its agent, and
explain how it ended.

Backend-neutral: it needs a leased agent connection and the sandbox's cgroup counters. The
deadline of a command or cell (its timeout plus a grace for the agent) starts once the
connection is leased: a wait for a free connection never eats into it (the client bounds that
wait itself), and a deadline that passes is AgentTimeout, never a bare TimeoutError. OOM kills are
attributed from the cgroup's oom_kill counter (before/after) plus a SIGKILL exit (the
command itself, or a shell reporting 137 for its killed child, or a cell's interpreter); a
command or cell that hits the pids limit is killed by us (a fork bomb would otherwise spin
until its timeout) and reported as such.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from sandbox.agent_client import AgentConnection, CodeResult, EventStream, ExecChunk
from sandbox.cgroups import KillCounters
from sandbox.errors import AgentTimeout

WATCH_INTERVAL_S = 0.2
# How long past the command's own timeout we wait for the agent before giving up on it. The
# agent answers once the killed group has died, and a group killed while its cgroup thrashes
# at the memory limit took over 5 s to die (the OOM attack in tests/runtime/test_host_boundary).
AGENT_GRACE_S = 15.0
# A cell that ignores its KeyboardInterrupt is killed by the agent after this long.
INTERRUPT_GRACE_S = 2.0

CountersFn = Callable[[], Awaitable[KillCounters | None]]
ChunkSink = Callable[[ExecChunk], Awaitable[None]]


@dataclass(frozen=True)
class CommandRequest:
    command: str
    env: Mapping[str, str]
    cwd: str
    stdin: str
    timeout_ms: int
    max_output: int


@dataclass(frozen=True)
class CommandOutcome:
    exit_code: int
    timed_out: bool
    truncated: bool
    killed: str | None  # "oom" | "pids" | "shutdown" | None
    duration_ms: int


class KillWatch:
    """Attributes kernel kills during one operation from the cgroup counters (before/now)."""

    def __init__(self, counters: CountersFn) -> None:
        self._counters = counters
        self._before: KillCounters | None = None

    async def start(self) -> None:
        self._before = await self._counters()

    async def pids_hit(self) -> bool:
        if self._before is None:
            return False
        now = await self._counters()
        return now is not None and now.pids_limit_hits > self._before.pids_limit_hits

    async def oom_killed(self) -> bool:
        if self._before is None:
            return False
        now = await self._counters()
        return now is not None and now.oom_kills > self._before.oom_kills


async def _pump[T](
    stream: EventStream[T],
    watch: KillWatch,
    sink: ChunkSink,
    stop: asyncio.Event | None,
    interrupt_on_stop: bool,
) -> tuple[T, str | None]:
    """Relay output until the final event; kill on a pids-limit hit, stop on shutdown.

    Returns the final event and what we killed it for ("pids", "shutdown" or None).

    The checks run every WATCH_INTERVAL_S from a timer, in a task of their own only when it
    fires: a command that ends sooner (most of them) costs no task and no extra loop turns.
    The events are awaited directly; if that is cancelled mid-frame, the stream is left
    unfinished and its connection is closed, not reused.
    """
    loop = asyncio.get_running_loop()
    killed: str | None = None
    check: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle

    async def watchdog() -> None:
        nonlocal killed
        if killed is None and stop is not None and stop.is_set():
            killed = "shutdown"
            if interrupt_on_stop:
                await stream.interrupt("shutdown")
            else:
                await stream.kill("shutdown")
        if killed is None and await watch.pids_hit():
            killed = "pids"
            await stream.kill("pids")

    def tick() -> None:
        nonlocal check, timer
        if check is None or check.done():
            check = loop.create_task(watchdog())
        timer = loop.call_later(WATCH_INTERVAL_S, tick)

    timer = loop.call_later(WATCH_INTERVAL_S, tick)
    ended = False
    try:
        while True:
            event = await stream.next_event()
            if not isinstance(event, ExecChunk):
                ended = True
                break
            await sink(event)
    finally:
        timer.cancel()
        if check is not None:
            # A kill frame it is sending must be out before the connection can be reused.
            await asyncio.wait({check})
            failure = None if check.cancelled() else check.exception()
            if failure is not None and ended:
                raise failure
    return event, killed


async def run_command(
    conn: AgentConnection,
    counters: CountersFn,
    req: CommandRequest,
    sink: ChunkSink,
    stop: asyncio.Event | None = None,
) -> CommandOutcome:
    """Run one command; `stop` (daemon shutdown) kills it and reports `killed="shutdown"`."""
    watch = KillWatch(counters)
    await watch.start()
    payload = {
        "cmd": req.command,
        "env": dict(req.env),
        "cwd": req.cwd,
        "timeout_ms": req.timeout_ms,
        "max_output": req.max_output,
    }
    deadline_s = req.timeout_ms / 1000 + AGENT_GRACE_S
    try:
        async with asyncio.timeout(deadline_s), conn.exec(payload, req.stdin.encode()) as stream:
            result, killed = await _pump(stream, watch, sink, stop, interrupt_on_stop=False)
    except TimeoutError as exc:
        raise AgentTimeout(f"the command did not end within {deadline_s:.0f} s") from exc
    sigkilled = result.signal == signal.SIGKILL or result.exit_code == 128 + signal.SIGKILL
    # Only worth a counter read when the command died of SIGKILL.
    if killed is None and sigkilled and await watch.oom_killed():
        killed = "oom"
    if killed is None and result.killed == "pids":
        killed = "pids"
    return CommandOutcome(
        exit_code=result.exit_code,
        timed_out=result.timed_out and killed is None,
        truncated=result.truncated,
        killed=killed,
        duration_ms=result.duration_ms,
    )


@dataclass(frozen=True)
class CodeRequest:
    session_id: str
    code: str
    timeout_ms: int
    max_output: int
    max_sessions: int


@dataclass(frozen=True)
class CodeOutcome:
    result: CodeResult
    killed: str | None  # "oom" | "pids" | "shutdown" | None


async def run_code(
    conn: AgentConnection,
    counters: CountersFn,
    req: CodeRequest,
    sink: ChunkSink,
    stop: asyncio.Event | None = None,
) -> CodeOutcome:
    """Run one cell in a session; `stop` (daemon shutdown) interrupts it (state kept unless
    it ignores the KeyboardInterrupt) and reports `killed="shutdown"`."""
    watch = KillWatch(counters)
    await watch.start()
    payload = {
        "session": req.session_id,
        "timeout_ms": req.timeout_ms,
        "max_output": req.max_output,
        "max_sessions": req.max_sessions,
    }
    deadline_s = req.timeout_ms / 1000 + INTERRUPT_GRACE_S + AGENT_GRACE_S
    try:
        async with asyncio.timeout(deadline_s), conn.code(payload, req.code.encode()) as stream:
            result, killed = await _pump(stream, watch, sink, stop, interrupt_on_stop=True)
    except TimeoutError as exc:
        raise AgentTimeout(f"the cell did not end within {deadline_s:.0f} s") from exc
    if killed is None and result.stop in ("pids", "shutdown"):
        killed = result.stop
    if killed is None and result.signal == signal.SIGKILL and await watch.oom_killed():
        killed = "oom"
    return CodeOutcome(result, killed)
