"""Run one command in a sandbox through its agent, and explain how it ended.

Backend-neutral: it needs the agent client and the sandbox's cgroup counters. OOM kills are
attributed from the cgroup's oom_kill counter (before/after) plus a SIGKILL exit (the
command itself, or a shell reporting 137 for its killed child); a command that
hits the pids limit is killed by us (a fork bomb would otherwise spin until its timeout) and
reported as such.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from sandbox.agent_client import AgentClient, ExecChunk, ExecExit
from sandbox.cgroups import KillCounters
from sandbox.errors import AgentUnavailable

WATCH_INTERVAL_S = 0.2
# How long past the command's own timeout we wait for the agent before giving up on it.
AGENT_GRACE_S = 5.0

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


async def run_command(
    agent: AgentClient,
    counters: CountersFn,
    req: CommandRequest,
    sink: ChunkSink,
    stop: asyncio.Event | None = None,
) -> CommandOutcome:
    """Run one command; `stop` (daemon shutdown) kills it and reports `killed="shutdown"`."""
    before = await counters()
    payload = {
        "cmd": req.command,
        "env": dict(req.env),
        "cwd": req.cwd,
        "timeout_ms": req.timeout_ms,
        "max_output": req.max_output,
    }
    killed: str | None = None
    async with (
        asyncio.timeout(req.timeout_ms / 1000 + AGENT_GRACE_S),
        agent.exec(payload, req.stdin.encode()) as stream,
    ):
        pending: asyncio.Future[ExecChunk | ExecExit] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(stream.next_event())
                done, _ = await asyncio.wait({pending}, timeout=WATCH_INTERVAL_S)
                if not done:
                    if killed is None and stop is not None and stop.is_set():
                        killed = "shutdown"
                        await stream.kill("shutdown")
                    if killed is None and before is not None:
                        now = await counters()
                        if now is not None and now.pids_limit_hits > before.pids_limit_hits:
                            killed = "pids"
                            await stream.kill("pids")
                    continue
                event = pending.result()
                pending = None
                if isinstance(event, ExecExit):
                    result = event
                    break
                await sink(event)
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, AgentUnavailable):
                    await pending
    sigkilled = result.signal == signal.SIGKILL or result.exit_code == 128 + signal.SIGKILL
    if killed is None and sigkilled and before is not None:
        after = await counters()  # only worth a read when the command died of SIGKILL
        if after is not None and after.oom_kills > before.oom_kills:
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
