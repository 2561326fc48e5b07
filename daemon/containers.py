"""Containers: create (cold or from the warm pool, with files, skills and egress), retrieve,
list, delete, expire, events, activity; the agent watch's deaths.

Handlers parse and serialise; everything with a rule in it lives in the services. Sandbox
errors reach them already translated into domain errors (daemon/sandboxes.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from daemon import ids
from daemon.activity import OpenOperations
from daemon.agentwatch import AgentWatch
from daemon.config import Config
from daemon.container_egress import ContainerEgress
from daemon.errors import (
    ContainerExpired,
    DomainError,
    InvalidRequest,
    NotFound,
    QuotaExceeded,
    StorageFull,
)
from daemon.images import ImageService
from daemon.logs import container_id as log_container_id
from daemon.metrics import Metrics
from daemon.models import ContainerRecord, EventRecord, Page, Status, UserFileRecord
from daemon.pool import WarmPool
from daemon.sandboxes import Lease, Sandboxes, translate
from daemon.skills import SkillRef, SkillService
from daemon.store import Store
from daemon.tasks import TaskSupervisor
from daemon.user_files import FileService
from daemon.workspace_files import WorkspaceFiles
from sandbox.policy import NetworkPolicy
from sandbox.spec import MEMORY_TIERS, SandboxSpec, SkillFiles

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
    image: str | None = None  # our extension; None = the configured default


def _now() -> int:
    return int(time.time())


class ContainerService:
    def __init__(
        self,
        config: Config,
        store: Store,
        sandboxes: Sandboxes,
        metrics: Metrics,
        tasks: TaskSupervisor,
        *,
        workspace: WorkspaceFiles,
        user_files: FileService,
        skills: SkillService,
        egress: ContainerEgress,
        pool: WarmPool | None,
        images: ImageService,
    ) -> None:
        self._cfg = config
        self._store = store
        self._sandboxes = sandboxes
        self._metrics = metrics
        self._tasks = tasks
        self._workspace = workspace  # /v1/files copied into /mnt/data by create
        self._user_files = user_files  # file_ids resolve here
        self._skills = skills  # /v1/skills, mounted at /mnt/skills by create
        self._egress = egress
        self._pool = pool
        self._images = images
        self.agent_watch = AgentWatch(sandboxes.agent_pid, tasks, self._agent_died)
        self.open_operations = OpenOperations()
        self.creating = 0  # creates in flight, pool hits too: the pool refills when none are
        self._expiring: set[str] = set()  # being expired: no new operation may start
        self._touched: dict[str, int] = {}  # last second recorded per container

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

    @contextlib.asynccontextmanager
    async def leased(self, caller: Caller, cid: str, action: str) -> AsyncIterator[Lease]:
        """The caller's running container, held active, with one agent connection leased for
        the block: a busy agent refuses here (429) before anything runs, so a stream is opened
        only once its run can start (exec and code)."""
        await self.running(caller, cid)
        # No await between the check and active(): the reaper cannot slip in between.
        async with self.active(cid), self._sandboxes.lease(cid, action) as lease:
            yield lease

    async def record_event(self, cid: str, kind: str, **detail: str | int | None) -> None:
        """Append to the container's event history and log it (one line per event)."""
        logger.info("container event", extra={"event": kind, "container_id": cid, **detail})
        await self._store.containers.add_event(cid, _now(), kind, detail)

    async def record_kill(self, cid: str, killed: str | None, **detail: str | int | None) -> None:
        """A run (command or cell) killed for OOM or the pids limit is an event of the
        container (kills are counted in the metrics by the run's service)."""
        if killed in ("oom", "pids"):
            kind = "oom_kill" if killed == "oom" else "pids_limit"
            await self.record_event(cid, kind, **detail)

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
            await self._egress.release(cid)
            # an expired container never runs again
            await self._store.containers.delete_secrets(cid)
            try:
                await self._sandboxes.destroy(cid, "expire")
            except DomainError as exc:
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
        counters = await self._sandboxes.counters(cid)
        cause = "oom" if counters is not None and counters.agent_oom_kills > 0 else "killed"
        self._metrics.agent_deaths.labels(cause).inc()
        await self.record_event(cid, "agent_died", cause=cause)
        why = " (out of memory)" if cause == "oom" else ""
        await self.expire(cid, f"the sandbox's agent died{why}", force=True)

    async def refresh_metrics(self) -> None:
        """Update the state gauges (containers by status/tier, memory by tier) for a scrape."""
        self._metrics.set_containers(await self._store.containers.count_by_status_tier())
        memory: dict[str, int] = {}
        for rec in await self._store.containers.with_status((Status.RUNNING,)):
            counters = await self._sandboxes.counters(rec.id)
            if counters is not None:
                memory[rec.memory_limit] = memory.get(rec.memory_limit, 0) + counters.memory_bytes
        self._metrics.set_memory(memory)

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
            sources = await self._user_files.resolve(caller, list(params.file_ids))
        if not params.skills:
            return await self._create(caller, params, sources, [])
        skills = self._skills
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
        if params.network is not None and not self._egress.enabled:
            raise InvalidRequest(
                "network_policy 'allowlist' needs the egress proxy, which is disabled in this "
                "sandboxd's configuration ([proxy] enabled = false).",
                param="network_policy.type",
            )
        limit = self._cfg.containers.max_containers_per_owner
        if await self._store.containers.count(caller.owner) >= limit:
            raise QuotaExceeded(f"At most {limit} containers per owner may exist at once.")
        image = await self._images.resolve(params.image)
        now = _now()
        started = time.monotonic()
        pooled = None
        if self._pool is not None:
            pooled = await self._pool.claim(image, params.memory_limit)
        rec = ContainerRecord(
            id=pooled or ids.container_id(),
            owner=caller.owner,
            name=params.name,
            created_at=now,
            last_active_at=now,
            status=Status.CREATING,
            memory_limit=params.memory_limit,
            expires_minutes=params.expires_minutes,
            runtime=self._sandboxes.name,
            network_policy=params.network.public() if params.network else None,
            image=image,
        )
        log_container_id.set(rec.id)
        await self._store.containers.insert(rec)
        try:
            if pooled is None:
                await self._cold_start(rec.id, image, params.memory_limit)
        except BaseException:
            self._metrics.create_failures.labels(self._sandboxes.name).inc()
            await self._store.containers.delete(rec.id)
            raise
        elapsed = time.monotonic() - started
        pool = "miss" if pooled is None else "hit"
        self._metrics.create_seconds.labels(self._sandboxes.name, pool).observe(elapsed)
        try:
            await self._workspace.copy_in(rec.id, sources)
            if mounts:
                await self._sandboxes.install_skills(rec.id, mounts)
            if params.network is not None:
                with translate("egress"):
                    await self._egress.setup(rec.id, params.network)
        except BaseException:
            # All or nothing: a create whose files cannot be copied leaves no container.
            self._metrics.create_failures.labels(self._sandboxes.name).inc()
            if params.network is not None:
                await self._egress.release(rec.id)
            try:
                await self._sandboxes.destroy(rec.id, "clean up")
            except DomainError as exc:
                logger.error("cleanup after a failed create", extra={"error": str(exc)})
            await self._store.containers.delete(rec.id)
            raise
        await self._store.containers.set_status(rec.id, Status.RUNNING)
        await self.agent_watch.watch(rec.id)
        await self.record_event(
            rec.id,
            "created",
            memory_limit=params.memory_limit,
            image=image,
            pool=pool,
            ms=round(elapsed * 1000),
        )
        return dataclasses.replace(rec, status=Status.RUNNING)

    async def _cold_start(self, cid: str, image: str, tier: str) -> None:
        spec = SandboxSpec(
            sandbox_id=cid,
            memory_bytes=MEMORY_TIERS[tier],
            limits=self._cfg.containers.limits(),
            image=image,
            trust_bundle=self._egress.trust_bundle,
        )
        if self._pool is not None:  # pooled sandboxes give way to a request
            await self._pool.make_room(spec.memory_bytes)
        await self._sandboxes.create(spec)

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
        await self._egress.release(rec.id)
        await self._sandboxes.destroy(rec.id)
        await self._store.containers.delete(rec.id)
        self._touched.pop(rec.id, None)
        logger.info("container deleted")
