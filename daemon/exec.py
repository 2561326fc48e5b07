"""Exec (POST /v1/containers/{id}/exec): a batch of shell commands run in order through the
container's agent, their output passed on as it arrives, how each ended explained."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from daemon.config import Config
from daemon.containers import Caller, ContainerService
from daemon.metrics import Metrics
from daemon.sandboxes import Lease, Sandboxes, translate
from daemon.shutdown import ShutdownControl
from sandbox.agent_client import ExecChunk
from sandbox.execution import CommandOutcome, CommandRequest, run_command

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExecParams:
    commands: list[str]
    timeout_ms: int
    max_output: int
    env: dict[str, str]
    working_directory: str
    stdin: str


# (command index, "stdout" | "stderr", bytes): where a command's output goes as it arrives;
# the service keeps none of it.
OutputSink = Callable[[int, str, bytes], Awaitable[None]]
ResultSink = Callable[[int, CommandOutcome], Awaitable[None]]


class ExecService:
    def __init__(
        self,
        config: Config,
        containers: ContainerService,
        sandboxes: Sandboxes,
        shutdown: ShutdownControl,
        metrics: Metrics,
    ) -> None:
        self._cfg = config.exec
        self._containers = containers
        self._sandboxes = sandboxes
        self._shutdown = shutdown
        self._metrics = metrics

    async def exec(
        self,
        caller: Caller,
        cid: str,
        params: ExecParams,
        sink: OutputSink,
        finished: ResultSink | None = None,
    ) -> list[CommandOutcome]:
        """Run the commands in order; their output goes to `sink` as it arrives.

        The batch holds one agent connection from its first command to its last, so a busy
        agent refuses it (429) before anything ran, and no command waits for a connection
        halfway through. Output is capped per command (`max_output`) and for the batch
        (`exec.max_total_output`): a command gets at most what the earlier ones left."""
        async with self.leased(caller, cid) as lease:
            return await self.run(lease, cid, params, sink, finished)

    def leased(self, caller: Caller, cid: str) -> contextlib.AbstractAsyncContextManager[Lease]:
        """See ContainerService.leased: a stream opens inside it, once a run can start."""
        return self._containers.leased(caller, cid, "exec")

    async def run(
        self,
        lease: Lease,
        cid: str,
        params: ExecParams,
        sink: OutputSink,
        finished: ResultSink | None = None,
    ) -> list[CommandOutcome]:
        """The batch on a leased connection; sandbox failures come out translated."""
        with translate("exec"):
            return await self._run(lease, cid, params, sink, finished)

    async def _run(
        self,
        lease: Lease,
        cid: str,
        params: ExecParams,
        sink: OutputSink,
        finished: ResultSink | None,
    ) -> list[CommandOutcome]:
        outcomes: list[CommandOutcome] = []
        left = self._cfg.max_total_output
        for index, command in enumerate(params.commands):
            meter = _Meter(index, sink)
            req = CommandRequest(
                command=command,
                env=params.env,
                cwd=params.working_directory,
                stdin=params.stdin,
                timeout_ms=params.timeout_ms,
                max_output=min(params.max_output, left),
            )
            stop = self._shutdown.stop_commands
            outcome = await run_command(lease.conn, lease.counters, req, meter, stop)
            left -= meter.bytes  # the agent client holds the agent to req.max_output
            outcomes.append(outcome)
            if finished is not None:
                await finished(index, outcome)
            logger.info(
                "command finished",
                extra={
                    "exit_code": outcome.exit_code,
                    "timed_out": outcome.timed_out,
                    "killed": outcome.killed,
                    "ms": outcome.duration_ms,
                },
            )
            self._metrics.count_command(outcome)
            await self._containers.record_kill(cid, outcome.killed, command=command[:200])
            if outcome.timed_out or outcome.killed == "shutdown":
                break
        # Files code wrote are discovered by the scan on list/retrieve, not on this hot path.
        return outcomes


class _Meter:
    """Passes one command's output on and counts it (for the batch's output budget)."""

    def __init__(self, index: int, sink: OutputSink) -> None:
        self._index = index
        self._sink = sink
        self.bytes = 0

    async def __call__(self, chunk: ExecChunk) -> None:
        self.bytes += len(chunk.data)
        await self._sink(self._index, chunk.stream, chunk.data)
