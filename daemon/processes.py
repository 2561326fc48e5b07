"""Background processes (/v1/containers/{id}/processes): commands the container's agent keeps
running past the request that started them, a client's disconnect and a daemon restart.

The agent holds the processes and their output rings (sandbox/agent/processes.py); the
daemon keeps only what it needs to account for them: the running ones per container, each
with the cgroup counters at its start (an exit by SIGKILL while the OOM counter rose was an
OOM kill; one that failed while the pids counter rose ran into the pids limit), and one watch
task per container with running processes. The watch is how their exits become
`process_exited` events and how the container stays active: it holds the container's
`active()` for as long as one of them runs, so the idle reaper leaves it alone. A daemon that
restarts finds the running ones again (`adopt`); an exit while it was down has no event.
Beside the watch, a guard reads the pids-limit counter every second: when it rises, the
agent kills the running process behind it, if one of these is (`killed: pids`).

A process may run on a terminal of its own (`tty`, resized by `resize`); attachments
(daemon/attach.py) follow its output and pass input through the same operations.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass

from daemon import ids
from daemon.config import Config
from daemon.containers import Caller, ContainerService
from daemon.errors import (
    ContainerExpired,
    DomainError,
    NotFound,
    SandboxBusy,
    SandboxTimeout,
    StorageFull,
    TooManyProcesses,
    TooManyTerminals,
)
from daemon.metrics import Metrics
from daemon.models import Page
from daemon.sandboxes import Sandboxes
from daemon.shutdown import ShutdownControl, cut_short
from daemon.tasks import TaskSupervisor
from sandbox.agent_client import AgentProcess, ExecChunk, OutputEnd, OutputStart
from sandbox.cgroups import CgroupCounters

logger = logging.getLogger(__name__)

# The signals a caller may send.
SIGNALS: Mapping[str, int] = {
    name: int(getattr(signal, f"SIG{name}"))
    for name in ("INT", "TERM", "KILL", "HUP", "QUIT", "USR1", "USR2", "WINCH")
}
WATCH_WAIT_MS = 25_000  # one long poll of the watch; an exit answers it at once
WATCH_RETRY_S = 1.0  # after a busy or slow agent
PIDS_CHECK_S = 1.0  # how often a container with running processes has its pids limit checked
MAX_REMEMBERED_KILLS = 4096  # why ended processes were killed, for their later retrievals

OutputEvent = OutputStart | ExecChunk | OutputEnd
Output = AsyncIterator[OutputEvent]
OutputSink = Callable[[OutputEvent], Awaitable[None]]


@dataclass(frozen=True)
class ProcessParams:
    command: str
    env: dict[str, str]
    working_directory: str
    size: tuple[int, int] | None = None  # (cols, rows) of its terminal; None: no terminal


@dataclass(frozen=True)
class Process:
    """A process in API terms: what the agent says, and why we saw it killed."""

    info: AgentProcess
    killed: str | None = None  # oom | pids


@dataclass(frozen=True)
class OutputRead:
    start: OutputStart
    chunks: list[ExecChunk]
    end: OutputEnd


class ProcessService:
    def __init__(
        self,
        config: Config,
        containers: ContainerService,
        sandboxes: Sandboxes,
        tasks: TaskSupervisor,
        shutdown: ShutdownControl,
        metrics: Metrics,
    ) -> None:
        self._cfg = config.processes
        self._containers = containers
        self._sandboxes = sandboxes
        self._tasks = tasks
        self._shutdown = shutdown
        self._metrics = metrics
        # container id -> process id -> the cgroup counters at its start (None: unknown)
        self._running: dict[str, dict[str, CgroupCounters | None]] = {}
        self._watches: dict[str, asyncio.Task[None]] = {}
        self._streams: collections.Counter[str] = collections.Counter()
        self._killed: dict[tuple[str, str], str] = {}
        metrics.processes_running.set_function(self.running_count)

    def running_count(self) -> int:
        return sum(len(procs) for procs in self._running.values())

    async def check(self, caller: Caller, cid: str) -> None:
        """The caller's container must exist and be running (404 / 400 expired)."""
        await self._containers.running(caller, cid)

    def _process(self, cid: str, info: AgentProcess) -> Process:
        return Process(info, self._killed.get((cid, info.id)))

    async def start(self, caller: Caller, cid: str, params: ProcessParams) -> Process:
        """Start a process (409 when the container runs as many as it may)."""
        await self._containers.running(caller, cid)
        # No await between the check and active(): the reaper cannot slip in between.
        async with self._containers.active(cid):
            before = await self._sandboxes.counters(cid)
            cap, terminals = self._cfg.max_per_container, self._cfg.max_terminals
            request = {
                "id": ids.process_id(),
                "cmd": params.command,
                "env": params.env,
                "cwd": params.working_directory,
                "ring_bytes": self._cfg.ring_bytes,
                "max_processes": cap,
            }
            if params.size is not None:
                cols, rows = params.size
                request.update(tty=True, cols=cols, rows=rows, max_terminals=terminals)
            async with (
                _capped(cap, terminals),
                self._sandboxes.agent(cid, "start process") as agent,
            ):
                info = await agent.start_process(request)
            self._track(cid, info.id, before)
        self._metrics.processes_started.inc()
        logger.info("process started", extra={"process_id": info.id, "tty": info.size is not None})
        return self._process(cid, info)

    async def list_processes(
        self, caller: Caller, cid: str, after: str | None, limit: int, desc: bool
    ) -> Page[Process]:
        await self._containers.running(caller, cid)
        async with self._sandboxes.agent(cid, "list processes") as agent:
            found = await agent.processes()
        # Ids are time-ordered (the agent keeps them oldest first, as made).
        found.sort(key=lambda p: p.id, reverse=desc)
        if after is not None:
            found = [p for p in found if (p.id < after if desc else p.id > after)]
        return Page([self._process(cid, p) for p in found[:limit]], len(found) > limit)

    async def get(self, caller: Caller, cid: str, pid: str) -> Process:
        await self._containers.running(caller, cid)
        with _named(pid):
            async with self._sandboxes.agent(cid, "get process") as agent:
                return self._process(cid, await agent.process(pid))

    async def delete(self, caller: Caller, cid: str, pid: str) -> None:
        """Kill the process's group, then forget the process."""
        await self._containers.running(caller, cid)
        with _named(pid):
            async with self._sandboxes.agent(cid, "delete process") as agent:
                await agent.delete_process(pid)
        self._untrack(cid, pid)  # its watch sees the table change and lets it go
        self._killed.pop((cid, pid), None)
        logger.info("process deleted", extra={"process_id": pid})

    async def send_input(self, caller: Caller, cid: str, pid: str, data: bytes, eof: bool) -> int:
        """Queue bytes for the process's stdin; the bytes it has not read yet."""
        await self._containers.running(caller, cid)
        async with self._containers.active(cid):
            with _named(pid):
                async with self._sandboxes.agent(cid, "process input") as agent:
                    return await agent.process_input(pid, data, eof)

    async def send_signal(self, caller: Caller, cid: str, pid: str, name: str) -> Process:
        """Signal the process's group (a name of SIGNALS, checked by the handler)."""
        await self._containers.running(caller, cid)
        async with self._containers.active(cid):
            with _named(pid):
                async with self._sandboxes.agent(cid, "signal process") as agent:
                    info = await agent.signal_process(pid, SIGNALS[name])
        logger.info("process signalled", extra={"process_id": pid, "signal": name})
        return self._process(cid, info)

    async def resize(self, caller: Caller, cid: str, pid: str, cols: int, rows: int) -> Process:
        """A terminal's new size (400 for a process without a terminal, 409 once ended)."""
        await self._containers.running(caller, cid)
        async with self._containers.active(cid):
            with _named(pid):
                async with self._sandboxes.agent(cid, "resize terminal") as agent:
                    info = await agent.resize_process(pid, cols, rows)
        return self._process(cid, info)

    async def ended(self, cid: str, info: AgentProcess) -> Process:
        """A process seen to have ended (by an attachment): its exit is accounted for now,
        as the watch would (once: whichever sees it first), so its `killed` is known."""
        procs = self._running.get(cid, {})
        if not info.running and info.id in procs:
            # An owned task, shielded: the watch no longer sees it, so an attachment that
            # leaves meanwhile (cancelling us) must not take its event and metrics with it.
            done = self._tasks.spawn("process-ended", self._ended(cid, info, procs.pop(info.id)))
            await asyncio.shield(done)
        return self._process(cid, info)

    async def read_output(self, caller: Caller, cid: str, pid: str, offset: int) -> OutputRead:
        """What the ring holds from `offset`, at most `processes.max_read_bytes`."""
        await self._containers.running(caller, cid)
        chunks: list[ExecChunk] = []
        start: OutputStart | None = None
        end: OutputEnd | None = None
        cap = self._cfg.max_read_bytes
        async with self._containers.active(cid):
            with _named(pid):
                async with (
                    self._sandboxes.agent(cid, "read process output") as agent,
                    agent.process_output(pid, offset, cap, False) as events,
                ):
                    async for event in events:
                        if isinstance(event, ExecChunk):
                            chunks.append(event)
                        elif isinstance(event, OutputEnd):
                            end = event
                        elif start is None:
                            start = event
        if start is None or end is None:
            raise NotFound(f"No process found with id '{pid}'.", param="process_id")
        self._metrics.process_output_bytes.inc(sum(len(c.data) for c in chunks))
        return OutputRead(start, chunks, end)

    async def stream_output(
        self, caller: Caller, cid: str, pid: str, offset: int, sink: OutputSink
    ) -> OutputEnd | None:
        """Pass the output from `offset` to `sink` until the process has ended (its last
        event, an OutputEnd, is returned) or the daemon stops (None). Each open stream holds
        one of the agent's connections: at most `processes.max_streams` per container."""
        await self._containers.running(caller, cid)
        if self._streams[cid] >= self._cfg.max_streams:
            raise SandboxBusy(
                f"At most {self._cfg.max_streams} output streams may be open per container."
            )
        self._streams[cid] += 1
        try:
            async with self._containers.active(cid):
                return await self._stream(cid, pid, offset, sink)
        finally:
            self._streams[cid] -= 1
            if self._streams[cid] <= 0:
                del self._streams[cid]

    async def _stream(self, cid: str, pid: str, offset: int, sink: OutputSink) -> OutputEnd | None:
        last: OutputEnd | None = None
        # The daemon's shutdown ends the stream (the process runs on).
        async with self.follow(cid, pid, offset) as events, cut_short(self._shutdown.stop_streams):
            async for event in events:
                if isinstance(event, OutputEnd):
                    last = event
                elif isinstance(event, ExecChunk):
                    self._metrics.process_output_bytes.inc(len(event.data))
                await sink(event)
        return last

    @contextlib.asynccontextmanager
    async def follow(self, cid: str, pid: str, offset: int) -> AsyncIterator[Output]:
        """The process's output from `offset` until it has ended (an OutputEnd last), for a
        caller already checked; the block holds one of the agent's connections."""
        with _named(pid):
            async with (
                self._sandboxes.agent(cid, "follow process output") as agent,
                agent.process_output(pid, offset, 0, True) as events,
            ):
                yield events

    # ------------------------------------------------------------------ the watch

    def _track(self, cid: str, pid: str, before: CgroupCounters | None) -> None:
        self._running.setdefault(cid, {})[pid] = before
        if cid not in self._watches:
            self._watches[cid] = self._tasks.spawn("process-watch", self._watch(cid))

    def _untrack(self, cid: str, pid: str) -> None:
        procs = self._running.get(cid)
        if procs is not None:
            procs.pop(pid, None)

    async def adopt(self, cid: str) -> None:
        """After a daemon restart: watch the processes the container's agent still runs."""
        try:
            async with self._sandboxes.agent(cid, "list processes") as agent:
                found = await agent.processes()
        except DomainError as exc:
            logger.info("processes not adopted", extra={"container_id": cid, "error": str(exc)})
            return
        running = [p for p in found if p.running]
        if running:
            before = await self._sandboxes.counters(cid)
            for p in running:
                self._track(cid, p.id, before)
            logger.info("processes adopted", extra={"container_id": cid, "count": len(running)})

    async def _watch(self, cid: str) -> None:
        """While the container has running processes: hold it active, and turn each exit
        into a `process_exited` event. Ends with the last of them, or with the sandbox."""
        seq = -1
        guard = self._tasks.spawn("process-pids-guard", self._guard_pids(cid))
        try:
            async with self._containers.active(cid):
                while True:
                    if not self._running.get(cid):
                        # Decided with no await before the pop: a start after it spawns anew.
                        self._running.pop(cid, None)
                        self._watches.pop(cid, None)
                        return
                    try:
                        async with self._sandboxes.agent(cid, "watch processes") as agent:
                            seq, found = await agent.wait_processes(seq, WATCH_WAIT_MS)
                    except (SandboxBusy, SandboxTimeout):
                        await asyncio.sleep(WATCH_RETRY_S)
                        continue
                    await self._observe(cid, found)
        except (ContainerExpired, DomainError) as exc:
            # The sandbox is gone (deleted, expired) or its agent failed: so are its processes.
            logger.info("process watch ended", extra={"container_id": cid, "error": str(exc)})
        finally:
            guard.cancel()
            if self._watches.get(cid) is asyncio.current_task():
                self._watches.pop(cid, None)
                self._running.pop(cid, None)

    async def _guard_pids(self, cid: str) -> None:
        """Beside the watch: when the container runs into its pids limit, the background
        process behind it is killed (as an exec's command is: a fork bomb would otherwise
        keep the container full), if it is one (the agent picks the session with the most
        tasks; an exec's own watch ends an exec). Its exit then says `killed: pids`."""
        last: int | None = None
        while True:
            now = await self._sandboxes.kill_counters(cid)
            if now is not None:
                if last is not None and now.pids_limit_hits > last:
                    await self._pids_hit(cid)
                last = now.pids_limit_hits
            await asyncio.sleep(PIDS_CHECK_S)

    async def _pids_hit(self, cid: str) -> None:
        try:
            async with self._sandboxes.agent(cid, "pids limit") as agent:
                killed = await agent.kill_pids_culprit()
        except DomainError as exc:
            logger.info("pids limit not handled", extra={"container_id": cid, "error": str(exc)})
            return
        if killed is not None:
            self._remember_kill(cid, killed, "pids")
            logger.warning(
                "process killed at the pids limit",
                extra={"container_id": cid, "process_id": killed},
            )

    async def _observe(self, cid: str, found: list[AgentProcess]) -> None:
        procs = self._running.get(cid, {})
        current = {p.id: p for p in found}
        for pid in list(procs):
            p = current.get(pid)
            if p is None:
                procs.pop(pid, None)  # deleted meanwhile
            elif not p.running:
                before = procs.pop(pid, None)
                await self._ended(cid, p, before)

    def _remember_kill(self, cid: str, pid: str, killed: str) -> None:
        if len(self._killed) >= MAX_REMEMBERED_KILLS:
            del self._killed[next(iter(self._killed))]
        self._killed[(cid, pid)] = killed

    async def _ended(self, cid: str, p: AgentProcess, before: CgroupCounters | None) -> None:
        killed = self._killed.get((cid, p.id))  # by us, at the pids limit
        if (
            killed is None
            and before is not None
            and (p.signal == signal.SIGKILL or p.exit_code != 0)
        ):
            now = await self._sandboxes.counters(cid)
            if now is not None and p.signal == signal.SIGKILL and now.oom_kills > before.oom_kills:
                killed = "oom"
            elif now is not None and now.pids_limit_hits > before.pids_limit_hits:
                killed = "pids"
        if killed is not None:
            self._remember_kill(cid, p.id, killed)
            self._metrics.kills.labels(killed).inc()
        try:
            await self._containers.record_event(
                cid, "process_exited", process_id=p.id, exit_code=p.exit_code, killed=killed
            )
            await self._containers.record_kill(cid, killed, process_id=p.id)
        except StorageFull:
            # Bookkeeping only: a full state disk must not end the watch of the others.
            logger.warning("process_exited not recorded: state disk full")


@contextlib.asynccontextmanager
async def _capped(cap: int, terminals: int) -> AsyncIterator[None]:
    """The agent's refusal of one more process or terminal, with our cap in it."""
    try:
        yield
    except TooManyProcesses:
        raise TooManyProcesses(
            f"At most {cap} background processes may run per container; delete one or wait "
            "for one to end."
        ) from None
    except TooManyTerminals:
        raise TooManyTerminals(
            f"At most {terminals} terminals (tty processes) may run per container; delete one "
            "or wait for one to end."
        ) from None


@contextlib.contextmanager
def _named(pid: str) -> Iterator[None]:
    """The agent's 404 for a process, with the process's id in it."""
    try:
        yield
    except NotFound as exc:
        if exc.param != "process_id":
            raise
        raise NotFound(f"No process found with id '{pid}'.", param="process_id") from None
