"""Persistent Python sessions in a container (POST /v1/containers/{id}/code).

The in-sandbox agent keeps the sessions (one interpreter process each); this service checks
the caller and the container, holds the container active while a cell runs, attributes OOM
and pids kills from the cgroup counters, names why a session had to be restarted, and maps
the files a cell wrote to container file records.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from daemon import ids
from daemon.config import Config
from daemon.containers import Caller, ContainerService
from daemon.errors import NotFound
from daemon.metrics import Metrics
from daemon.models import FileRecord
from daemon.sandboxes import Lease, Sandboxes, translate
from daemon.shutdown import ShutdownControl
from daemon.store import Store
from sandbox.agent_client import AgentFile, CodeError, CodeSession, ExecChunk
from sandbox.execution import CodeOutcome, CodeRequest, run_code

logger = logging.getLogger(__name__)

DEFAULT_SESSION = "default"
# Deaths we attributed (OOM) but the agent cannot know about, reported by the session's next
# call; bounded, since a container may go away before that call comes.
MAX_REMEMBERED_DEATHS = 4096

# (stream name, bytes): where a running cell's output goes as it arrives; the service keeps
# none of it.
CodeSink = Callable[[str, bytes], Awaitable[None]]


@dataclass(frozen=True)
class CodeParams:
    code: str
    session_id: str
    timeout_ms: int
    max_output: int


@dataclass(frozen=True)
class CodeRun:
    """How one call ended, in API terms."""

    session_id: str
    truncated: bool
    result: str | None
    result_truncated: bool
    error: CodeError | None
    outcome: str  # ok | error | timeout | killed
    state_lost: bool  # the interpreter died with this call: the next call starts afresh
    killed: str | None  # oom | pids | shutdown
    restarted: bool  # this call ran in a new interpreter: the previous one died
    restart_reason: str | None
    files: list[FileRecord]
    files_truncated: bool
    duration_ms: int


class CodeService:
    def __init__(
        self,
        config: Config,
        containers: ContainerService,
        store: Store,
        sandboxes: Sandboxes,
        shutdown: ShutdownControl,
        metrics: Metrics,
    ) -> None:
        self._cfg = config
        self._containers = containers
        self._store = store
        self._sandboxes = sandboxes
        self._shutdown = shutdown
        self._metrics = metrics
        self._deaths: dict[tuple[str, str], str] = {}

    async def check(self, caller: Caller, cid: str) -> None:
        """The caller's container must exist and be running (404 / 400 expired)."""
        await self._containers.running(caller, cid)

    async def run(self, caller: Caller, cid: str, params: CodeParams, sink: CodeSink) -> CodeRun:
        """Run one cell; its output goes to `sink`, capped at `max_output` and at
        `exec.max_total_output`. The cell's deadline starts once an agent connection is
        leased (a busy agent answers 429 before the cell runs)."""
        async with self.leased(caller, cid) as lease:
            return await self.run_cell(lease, cid, params, sink)

    def leased(self, caller: Caller, cid: str) -> contextlib.AbstractAsyncContextManager[Lease]:
        """See ContainerService.leased: a stream opens inside it, once the cell can start."""
        return self._containers.leased(caller, cid, "code")

    async def run_cell(self, lease: Lease, cid: str, params: CodeParams, sink: CodeSink) -> CodeRun:
        """The cell on a leased connection; sandbox failures come out translated."""

        async def relay(chunk: ExecChunk) -> None:
            await sink(chunk.stream, chunk.data)

        req = CodeRequest(
            session_id=params.session_id,
            code=params.code,
            timeout_ms=params.timeout_ms,
            max_output=min(params.max_output, self._cfg.exec.max_total_output),
            max_sessions=self._cfg.code.max_sessions,
        )
        with translate("code"):
            done = await run_code(
                lease.conn, lease.counters, req, relay, self._shutdown.stop_commands
            )
        run = await self._finish(cid, params.session_id, done)
        logger.info(
            "code finished",
            extra={
                "session": params.session_id,
                "outcome": run.outcome,
                "killed": run.killed,
                "restarted": run.restarted,
                "ms": run.duration_ms,
            },
        )
        return run

    async def _finish(self, cid: str, sid: str, done: CodeOutcome) -> CodeRun:
        res = done.result
        key = (cid, sid)
        remembered = self._deaths.pop(key, None)
        restart_reason = (remembered or res.restart_reason) if res.restarted else None
        if res.status == "died" and done.killed == "oom":
            if len(self._deaths) >= MAX_REMEMBERED_DEATHS:
                del self._deaths[next(iter(self._deaths))]
            self._deaths[key] = "oom"
        if done.killed is not None:
            self._metrics.kills.labels(done.killed).inc()
        await self._containers.record_kill(cid, done.killed, session=sid)
        if res.stop == "timeout":
            outcome = "timeout"
        elif res.status in ("died", "interrupted"):
            outcome = "killed"
        else:
            outcome = res.status
        return CodeRun(
            session_id=sid,
            truncated=res.truncated,
            result=res.result,
            result_truncated=res.result_truncated,
            error=res.error,
            outcome=outcome,
            state_lost=res.status == "died",
            killed=done.killed,
            restarted=res.restarted,
            restart_reason=restart_reason,
            files=await self._file_records(cid, res.files, res.removed),
            files_truncated=res.files_truncated,
            duration_ms=res.duration_ms,
        )

    async def _file_records(
        self, cid: str, changed: list[AgentFile], removed: list[str]
    ) -> list[FileRecord]:
        """Container file records (stable ids, `assistant` when new) for what a cell wrote;
        what it removed leaves the records, as a listing would find."""
        if not changed and not removed:
            return []
        found = await self._store.container_files.record_changes(
            cid,
            {f.path: f.bytes for f in changed},
            removed,
            int(time.time()),
            ids.container_file_id,
            self._cfg.containers.max_file_records,
        )
        return [found[f.path] for f in changed if f.path in found]

    async def sessions(self, caller: Caller, cid: str) -> list[CodeSession]:
        await self._containers.running(caller, cid)
        async with self._sandboxes.agent(cid, "list sessions") as agent:
            return await agent.sessions()

    async def delete_session(self, caller: Caller, cid: str, sid: str) -> None:
        await self._containers.running(caller, cid)
        try:
            async with self._sandboxes.agent(cid, "delete session") as agent:
                await agent.delete_session(sid)
        except NotFound:
            raise NotFound(f"No code session found with id '{sid}'.", param="session_id") from None
        self._deaths.pop((cid, sid), None)
        logger.info("code session deleted", extra={"session": sid})
