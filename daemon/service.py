"""The service layer: what the API can do with containers, their files and exec.

Handlers parse and serialise; everything with a rule in it lives here. Sandbox errors are
translated into domain errors at this boundary (see _translate).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from daemon import ids
from daemon.activity import OpenOperations
from daemon.agentwatch import AgentWatch
from daemon.config import Config
from daemon.egress import EgressUnavailable
from daemon.errors import (
    ContainerExpired,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ProxyUnavailable,
    QuotaExceeded,
    SandboxBusy,
    SandboxFailed,
    SandboxTimeout,
    SandboxUnavailable,
    SessionBusy,
    StorageFull,
)
from daemon.files import FileService, check_filename
from daemon.logs import container_id as log_container_id
from daemon.metrics import Metrics
from daemon.models import (
    ContainerRecord,
    EventRecord,
    FileRecord,
    Page,
    Status,
    UserFileRecord,
)
from daemon.network import ContainerEgress
from daemon.pool import WarmPool
from daemon.shutdown import ShutdownControl
from daemon.skills import SkillRef, SkillService
from daemon.store import Store
from daemon.tasks import TaskSupervisor
from sandbox import pathnames
from sandbox.agent_client import AgentConnection, ExecChunk
from sandbox.cgroups import KillCounters
from sandbox.errors import (
    AgentBusy,
    AgentError,
    AgentProtocolError,
    AgentTimeout,
    AgentUnavailable,
    HostStorageFull,
    SandboxError,
)
from sandbox.execution import CommandOutcome, CommandRequest, run_command
from sandbox.policy import NetworkPolicy
from sandbox.runtime import Runtime
from sandbox.spec import MEMORY_TIERS, WORKSPACE, SandboxSpec, SkillFiles

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    owner: str
    admin: bool = False


@dataclass(frozen=True)
class CreateParams:
    name: str
    memory_limit: str
    expires_minutes: int
    file_ids: tuple[str, ...] = ()  # /v1/files copied into /mnt/data before create returns
    skills: tuple[SkillRef, ...] = ()  # installed read-only at /mnt/skills before it returns
    network: NetworkPolicy | None = None  # allowlist egress; None = no network


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

AGENT_ERRORS: dict[str, tuple[type[Exception], str | None]] = {
    "not_found": (NotFound, None),
    "no_space": (PayloadTooLarge, None),
    "too_large": (PayloadTooLarge, None),
    "bad_name": (InvalidRequest, "file"),
    "bad_cwd": (InvalidRequest, "working_directory"),
    "outside_workspace": (InvalidRequest, None),
    "not_regular": (InvalidRequest, None),
    "name_clash": (InvalidRequest, "file"),
    "bad_request": (InvalidRequest, None),
    "spawn_failed": (SandboxUnavailable, None),
    # code sessions
    "bad_session": (InvalidRequest, "session_id"),
    "too_many_sessions": (InvalidRequest, "session_id"),
    "session_busy": (SessionBusy, "session_id"),
    "session_not_found": (NotFound, "session_id"),
}


@contextlib.contextmanager
def _translate(action: str) -> Iterator[None]:
    """Turn sandbox-layer failures into domain errors (the one translation boundary).

    Everything the runtime and the agent client raise is a SandboxError (the agent client
    turns its timeouts and broken connections into AgentTimeout and AgentUnavailable); a
    TimeoutError that still gets here is a deadline of a layer below and answers 504, never
    an untyped 500."""
    try:
        yield
    except HostStorageFull as exc:
        raise StorageFull("The host's disk is full: the sandbox could not be created.") from exc
    except AgentError as exc:
        cls, param = AGENT_ERRORS.get(exc.code, (SandboxFailed, None))
        raise cls(exc.message, param=param) from exc  # type: ignore[call-arg]
    except AgentBusy as exc:
        logger.info("agent busy", extra={"action": action, "error": str(exc)})
        raise SandboxBusy(
            f"The container is busy ({action}): too many operations at once; retry shortly."
        ) from exc
    except AgentUnavailable as exc:
        raise SandboxUnavailable(f"The sandbox is not reachable ({action}).") from exc
    except (AgentTimeout, TimeoutError) as exc:
        logger.warning("agent timeout", extra={"action": action, "error": str(exc)})
        raise SandboxTimeout(f"The sandbox did not answer in time ({action}).") from exc
    except EgressUnavailable as exc:
        logger.error("egress proxy failed", extra={"action": action, "error": str(exc)})
        raise ProxyUnavailable("The egress proxy is unavailable; try again.") from exc
    except AgentProtocolError as exc:
        logger.warning("agent protocol violation", extra={"action": action, "error": str(exc)})
        raise SandboxFailed(f"The sandbox misbehaved ({action}).") from exc
    except SandboxError as exc:
        logger.error("sandbox operation failed", extra={"action": action, "error": str(exc)})
        raise SandboxFailed(f"The sandbox failed ({action}).") from exc


translate = _translate  # the boundary, for the other services (daemon/code.py)


def _now() -> int:
    return int(time.time())


class ContainerService:
    def __init__(
        self,
        config: Config,
        store: Store,
        runtime: Runtime,
        shutdown: ShutdownControl,
        metrics: Metrics,
        tasks: TaskSupervisor,
        files: FileService | None = None,
        skills: SkillService | None = None,
    ) -> None:
        self.files = files  # /v1/files, for file_ids and copies by file_id
        self.skills = skills  # /v1/skills, mounted at /mnt/skills by create
        self._cfg = config
        self._store = store
        self._runtime = runtime
        self._shutdown = shutdown
        self.metrics = metrics
        self.open_operations = OpenOperations()
        self.pool: WarmPool | None = None  # set by the composition root when configured
        self.egress: ContainerEgress | None = None  # set by the composition root
        self.trust_bundle: Path | None = None  # host CAs + the egress proxy's, for every sandbox
        self.creating = 0  # creates in flight, pool hits too: the pool refills when none are
        self._expiring: set[str] = set()  # being expired: no new operation may start
        self._touched: dict[str, int] = {}  # last second recorded per container
        self._tasks = tasks
        self.agent_watch = AgentWatch(runtime, tasks, self._agent_died)

    def _touch(self, cid: str) -> int:
        """Record activity now; a burst of calls within one second writes once. The write
        goes to the store in the background: a request never waits for bookkeeping behind
        another tenant's big transaction on the one store thread (the reaper reads
        `last_active`, which knows of writes still on their way)."""
        now = _now()
        if self._touched.get(cid, 0) < now:
            self._touched[cid] = now
            self._tasks.spawn("touch", self._write_touch(cid, now))
        return now

    async def _write_touch(self, cid: str, now: int) -> None:
        try:
            await self._store.containers.touch(cid, now)
        except StorageFull:
            # Bookkeeping only: a full state disk must not stop running sandboxes.
            logger.warning("last_active_at not recorded: state disk full")

    def last_active(self, rec: ContainerRecord) -> int:
        """The container's last activity, counting what is not in the store yet."""
        return max(rec.last_active_at, self._touched.get(rec.id, 0))

    @contextlib.asynccontextmanager
    async def active(self, cid: str) -> AsyncIterator[None]:
        """Hold the container active for the length of an operation (exec, code, stream).

        Enter it right after the status check, with no await in between: the reaper then
        either sees the operation (and skips the container) or has claimed it (we refuse)."""
        if cid in self._expiring:
            raise ContainerExpired()
        self.open_operations.enter(cid)
        try:
            yield
        finally:
            self.open_operations.leave(cid)
            self._touch(cid)

    async def record_event(self, cid: str, kind: str, **detail: str | int | None) -> None:
        """Append to the container's event history and log it (one line per event)."""
        logger.info("container event", extra={"event": kind, "container_id": cid, **detail})
        await self._store.containers.add_event(cid, _now(), kind, detail)

    async def events(self, caller: Caller, cid: str) -> list[EventRecord]:
        rec = await self.get(caller, cid, touch=False)
        return await self._store.containers.events(rec.id)

    async def expire(self, cid: str, reason: str, *, force: bool = False) -> bool:
        """Free the sandbox, keep the record as `expired`. False if the container is busy
        (unless `force`: its sandbox is gone anyway, what is in flight fails) or already
        being expired."""
        if (self.open_operations.busy(cid) and not force) or cid in self._expiring:
            return False
        self._expiring.add(cid)
        try:
            await self._store.containers.set_status(cid, Status.EXPIRED, reason)
            self._touched.pop(cid, None)
            self.agent_watch.unwatch(cid)
            if self.egress is not None:
                await self.egress.release(cid)
            # an expired container never runs again
            await self._store.containers.delete_secrets(cid)
            try:
                await self._runtime.destroy(cid)
            except SandboxError as exc:
                # The record says expired either way; the reconciler retries the cleanup.
                logger.error(
                    "expiry cleanup failed", extra={"container_id": cid, "error": str(exc)}
                )
            await self.record_event(cid, "expired", reason=reason)
        finally:
            self._expiring.discard(cid)
        return True

    async def _agent_died(self, cid: str) -> None:
        """The sandbox's agent is gone, and with it the sandbox: expire the container with
        the cause (an OOM kill of the agent, else a kill from outside), at once."""
        rec = await self._store.containers.get(cid)
        if rec is None or rec.status != Status.RUNNING or cid in self._expiring:
            return  # deleted or expired meanwhile: the watch fired on our own destroy
        counters = await self._runtime.counters(cid)
        cause = "oom" if counters is not None and counters.agent_oom_kills > 0 else "killed"
        self.metrics.agent_deaths.labels(cause).inc()
        await self.record_event(cid, "agent_died", cause=cause)
        why = " (out of memory)" if cause == "oom" else ""
        await self.expire(cid, f"the sandbox's agent died{why}", force=True)

    async def refresh_metrics(self) -> None:
        """Update the state gauges (containers by status/tier, memory by tier) for a scrape."""
        self.metrics.set_containers(await self._store.containers.count_by_status_tier())
        memory: dict[str, int] = {}
        for rec in await self._store.containers.with_status((Status.RUNNING,)):
            counters = await self._runtime.counters(rec.id)
            if counters is not None:
                memory[rec.memory_limit] = memory.get(rec.memory_limit, 0) + counters.memory_bytes
        self.metrics.set_memory(memory)

    # ------------------------------------------------------------------ containers

    async def create(self, caller: Caller, params: CreateParams) -> ContainerRecord:
        """Every file_id and skill resolves (else 404/400) before anything exists. The warm
        pool does not refill while a create is in flight: a refill's create would compete
        with it for the CPUs (and the interpreter)."""
        self.creating += 1
        try:
            return await self._resolve_and_create(caller, params)
        finally:
            self.creating -= 1

    async def _resolve_and_create(self, caller: Caller, params: CreateParams) -> ContainerRecord:
        sources: list[UserFileRecord] = []
        if params.file_ids:
            sources = await self._user_files().resolve(caller, list(params.file_ids))
        if not params.skills:
            return await self._create(caller, params, sources, [])
        skills = self._skill_service()
        staging = await skills.staging()  # inline skills are repacked here
        try:
            mounts = await skills.resolve(caller, list(params.skills), staging.tmp_dir)
            return await self._create(caller, params, sources, mounts)
        finally:
            await skills.discard(staging)

    async def _create(
        self,
        caller: Caller,
        params: CreateParams,
        sources: list[UserFileRecord],
        mounts: list[SkillFiles],
    ) -> ContainerRecord:
        if params.network is not None and (self.egress is None or not self.egress.enabled):
            raise InvalidRequest(
                "network_policy 'allowlist' needs the egress proxy, which is disabled in this "
                "sandboxd's configuration ([proxy] enabled = false).",
                param="network_policy.type",
            )
        limit = self._cfg.containers.max_containers_per_owner
        if await self._store.containers.count(caller.owner) >= limit:
            raise QuotaExceeded(f"At most {limit} containers per owner may exist at once.")
        now = _now()
        started = time.monotonic()
        pooled = await self.pool.claim(params.memory_limit) if self.pool is not None else None
        rec = ContainerRecord(
            id=pooled or ids.container_id(),
            owner=caller.owner,
            name=params.name,
            created_at=now,
            last_active_at=now,
            status=Status.CREATING,
            memory_limit=params.memory_limit,
            expires_minutes=params.expires_minutes,
            runtime=self._runtime.name,
            network_policy=params.network.public() if params.network else None,
        )
        log_container_id.set(rec.id)
        await self._store.containers.insert(rec)
        try:
            if pooled is None:
                await self._cold_start(rec.id, params.memory_limit)
        except BaseException:
            self.metrics.create_failures.labels(self._runtime.name).inc()
            await self._store.containers.delete(rec.id)
            raise
        elapsed = time.monotonic() - started
        pool = "miss" if pooled is None else "hit"
        self.metrics.create_seconds.labels(self._runtime.name, pool).observe(elapsed)
        try:
            await self._copy_in(rec.id, sources)
            if mounts:
                with _translate("install skills"):
                    await self._runtime.install_skills(rec.id, mounts)
            if params.network is not None:
                assert self.egress is not None
                with _translate("egress"):
                    await self.egress.setup(rec.id, params.network)
        except BaseException:
            # All or nothing: a create whose files cannot be copied leaves no container.
            self.metrics.create_failures.labels(self._runtime.name).inc()
            if self.egress is not None and params.network is not None:
                await self.egress.release(rec.id)
            try:
                await self._runtime.destroy(rec.id)
            except SandboxError as exc:
                logger.error("cleanup after a failed create", extra={"error": str(exc)})
            await self._store.containers.delete(rec.id)
            raise
        await self._store.containers.set_status(rec.id, Status.RUNNING)
        await self.agent_watch.watch(rec.id)
        await self.record_event(
            rec.id,
            "created",
            memory_limit=params.memory_limit,
            pool=pool,
            ms=round(elapsed * 1000),
        )
        return dataclasses.replace(rec, status=Status.RUNNING)

    async def _cold_start(self, cid: str, tier: str) -> None:
        spec = SandboxSpec(
            sandbox_id=cid,
            memory_bytes=MEMORY_TIERS[tier],
            limits=self._cfg.containers.limits(),
            trust_bundle=self.trust_bundle,
        )
        if self.pool is not None:  # pooled sandboxes give way to a request
            await self.pool.make_room(spec.memory_bytes)
        with _translate("create"):
            await self._runtime.create(spec)

    async def get(self, caller: Caller, cid: str, *, touch: bool = True) -> ContainerRecord:
        rec = await self._store.containers.get(cid) if ids.CONTAINER_ID.fullmatch(cid) else None
        if rec is None or rec.status in (Status.CREATING, Status.DELETING):
            raise NotFound(f"No container found with id '{cid}'.", param="container_id")
        if not caller.admin and rec.owner != caller.owner:
            raise NotFound(f"No container found with id '{cid}'.", param="container_id")
        log_container_id.set(cid)
        if touch and rec.status == Status.RUNNING:
            now = self._touch(cid)
            rec = dataclasses.replace(rec, last_active_at=max(now, rec.last_active_at))
        return rec

    async def running(self, caller: Caller, cid: str) -> ContainerRecord:
        """The caller's container, which must be running (400 'Container is expired.')."""
        rec = await self.get(caller, cid)
        if rec.status != Status.RUNNING:
            raise ContainerExpired()
        return rec

    async def list_containers(
        self, caller: Caller, name: str | None, after: str | None, limit: int, desc: bool
    ) -> Page[ContainerRecord]:
        owner = None if caller.admin else caller.owner
        return await self._store.containers.page(owner, name, after, limit, desc)

    async def delete(self, caller: Caller, cid: str) -> None:
        rec = await self.get(caller, cid, touch=False)
        await self._store.containers.set_status(rec.id, Status.DELETING)
        self.agent_watch.unwatch(rec.id)
        if self.egress is not None:
            await self.egress.release(rec.id)
        with _translate("delete"):
            await self._runtime.destroy(rec.id)
        await self._store.containers.delete(rec.id)
        self._touched.pop(rec.id, None)
        logger.info("container deleted")

    # ----------------------------------------------------------------------- files

    async def _scan(self, cid: str) -> None:
        """Bring the container's file records in line with its workspace. A workspace with
        more files than one listing sees (`max_files_listed`) is listed in byte order of the
        paths and cut short: records up to the last listed path are reconciled, the rest kept
        (within `max_file_records`), and the list says `workspace_truncated`."""
        cfg = self._cfg.containers
        with _translate("list files"):
            listing = await self._runtime.agent(cid).list_files(WORKSPACE, cfg.max_files_listed)
        found = {f.path: f.bytes for f in listing.files}
        upto: bytes | None = None  # complete: every record not found is gone
        if listing.truncated:
            # An agent from before ordered listings may cut anywhere: then forget nothing.
            ordered = listing.ordered and found
            upto = max(pathnames.raw(p) for p in found) if ordered else b""
        await self._store.container_files.sync(
            cid, found, upto, _now(), ids.container_file_id, cfg.max_file_records
        )

    async def upload(
        self, caller: Caller, cid: str, filename: str, data: AsyncIterator[bytes]
    ) -> FileRecord:
        await self.running(caller, cid)
        check_filename(filename)
        cap = self._cfg.containers.max_upload_bytes
        async with self.active(cid):
            with _translate("upload"):
                agent = self._runtime.agent(cid)
                path, size = await agent.write_file(WORKSPACE, filename, data, cap)
        rec = FileRecord(ids.container_file_id(), cid, path, "user", size, _now())
        await self._store.container_files.insert(rec, self._cfg.containers.max_file_records)
        logger.info("file uploaded", extra={"bytes": size})
        return rec

    def _skill_service(self) -> SkillService:
        if self.skills is None:
            raise InvalidRequest("Skills are not available in this daemon.", param="skills")
        return self.skills

    def _user_files(self) -> FileService:
        if self.files is None:
            raise InvalidRequest("Files are not available in this daemon.", param="file_ids")
        return self.files

    async def _copy_in(self, cid: str, sources: list[UserFileRecord]) -> list[FileRecord]:
        """Copy /v1/files blobs into /mnt/data through the agent (streamed, ` (1)` on a clash)."""
        copied: list[FileRecord] = []
        for src in sources:
            files = self._user_files()
            cap = max(src.bytes, 1)
            with _translate("copy file"):
                agent = self._runtime.agent(cid)
                path, size = await agent.write_file(WORKSPACE, src.filename, files.chunks(src), cap)
            rec = FileRecord(ids.container_file_id(), cid, path, "user", size, _now())
            await self._store.container_files.insert(rec, self._cfg.containers.max_file_records)
            copied.append(rec)
        if copied:
            logger.info("files copied", extra={"count": len(copied)})
        return copied

    async def copy_file(self, caller: Caller, cid: str, file_id: str) -> FileRecord:
        """POST /v1/containers/{id}/files with {"file_id"}: like an upload, from a stored file."""
        sources = await self._user_files().resolve(caller, [file_id])
        await self.running(caller, cid)
        async with self.active(cid):  # no await since the status check
            return (await self._copy_in(cid, sources))[0]

    async def list_files(
        self, caller: Caller, cid: str, after: str | None, limit: int, desc: bool
    ) -> Page[FileRecord]:
        rec = await self.get(caller, cid)
        if rec.status == Status.RUNNING and after is None:
            await self._scan(cid)  # later pages read the records the first one refreshed
        return await self._store.container_files.page(cid, after, limit, desc)

    async def get_file(self, caller: Caller, cid: str, fid: str) -> FileRecord:
        rec = await self.get(caller, cid)
        if rec.status == Status.RUNNING and ids.CONTAINER_FILE_ID.fullmatch(fid):
            await self._scan(cid)
        found = await self._store.container_files.get(cid, fid)
        if found is None:
            raise NotFound(f"No file found with id '{fid}'.", param="file_id")
        return found

    @contextlib.asynccontextmanager
    async def file_content(
        self, caller: Caller, cid: str, fid: str
    ) -> AsyncIterator[tuple[FileRecord, int, AsyncIterator[bytes]]]:
        await self.running(caller, cid)
        async with self.active(cid):
            found = await self._store.container_files.get(cid, fid)
            if found is None:
                raise NotFound(f"No file found with id '{fid}'.", param="file_id")
            cap = self._cfg.containers.max_download_bytes
            with _translate("download"):
                async with self._runtime.agent(cid).read_file(found.path, cap) as (size, chunks):
                    yield found, size, chunks

    async def delete_file(self, caller: Caller, cid: str, fid: str) -> None:
        await self.running(caller, cid)
        found = await self._store.container_files.get(cid, fid)
        if found is None:
            raise NotFound(f"No file found with id '{fid}'.", param="file_id")
        with contextlib.suppress(NotFound), _translate("delete file"):
            await self._runtime.agent(cid).delete_file(found.path)
        await self._store.container_files.delete(fid)

    # ------------------------------------------------------------------------ exec

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
        await self.running(caller, cid)
        # No await between the check and active(): the reaper cannot slip in between.
        async with self.active(cid):
            with _translate("exec"):
                async with self._runtime.agent(cid).connection() as conn:
                    return await self._exec(conn, cid, params, sink, finished)

    async def _exec(
        self,
        conn: AgentConnection,
        cid: str,
        params: ExecParams,
        sink: OutputSink,
        finished: ResultSink | None,
    ) -> list[CommandOutcome]:
        outcomes: list[CommandOutcome] = []
        left = self._cfg.exec.max_total_output

        async def counters() -> KillCounters | None:
            return await self._runtime.kill_counters(cid)

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
            outcome = await run_command(conn, counters, req, meter, self._shutdown.stop_commands)
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
            self.metrics.count_command(outcome)
            if outcome.killed in ("oom", "pids"):
                kind = "oom_kill" if outcome.killed == "oom" else "pids_limit"
                await self.record_event(cid, kind, command=command[:200])
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
