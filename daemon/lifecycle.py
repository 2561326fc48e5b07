"""Container lifecycle outside requests: reconciliation at start and the idle reaper."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from daemon.admission import Admission
from daemon.container_egress import ContainerEgress
from daemon.containers import ContainerService
from daemon.egress_proxy import EgressUnavailable
from daemon.metrics import Metrics
from daemon.models import ContainerRecord, Status
from daemon.secretbox import SecretBoxError
from daemon.store import Store
from sandbox.errors import SandboxError
from sandbox.runtime import Runtime
from sandbox.spec import MEMORY_TIERS

logger = logging.getLogger(__name__)

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
REASON_REBOOT = "host rebooted: sandboxes do not survive a reboot"
REASON_GONE = "sandbox gone while the daemon was stopped"


def read_boot_id(path: Path = BOOT_ID_PATH) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return "unknown"


async def _destroy(runtime: Runtime, sid: str) -> None:
    try:
        await runtime.destroy(sid)
    except SandboxError as exc:
        logger.error("reconcile: cleanup failed", extra={"container_id": sid, "error": str(exc)})


async def reconcile(
    store: Store,
    runtime: Runtime,
    service: ContainerService,
    egress: ContainerEgress,
    admission: Admission,
    boot_id: str,
) -> None:
    """Make records and sandboxes agree before serving, in both directions.

    - creating/deleting records (a crash mid-create or mid-delete): destroy and drop;
    - after a host reboot every running record expires with that reason;
    - a running record whose sandbox is gone expires; one whose sandbox runs is re-attached
      (its tier counted by admission control, its agent watched);
    - a sandbox of this daemon instance (runtime state, cgroup, workspace, id-range claim)
      with no running record is destroyed. Another instance's sandboxes are never listed.
    """
    rebooted = (await store.meta.get("boot_id")) not in (None, boot_id)
    for rec in await store.containers.with_status((Status.CREATING, Status.DELETING)):
        await _destroy(runtime, rec.id)
        await store.containers.delete(rec.id)
        logger.info("reconcile: removed unfinished container", extra={"container_id": rec.id})
    running: set[str] = set()
    for rec in await store.containers.with_status((Status.RUNNING,)):
        alive = not rebooted and await runtime.is_running(rec.id)
        if alive:
            running.add(rec.id)
            admission.adopt(rec.id, MEMORY_TIERS[rec.memory_limit])
            await service.agent_watch.watch(rec.id)
            await service.record_event(rec.id, "restarted_daemon")
            await _restore_egress(egress, rec)
            continue
        await _destroy(runtime, rec.id)
        await store.containers.delete_secrets(rec.id)
        reason = REASON_REBOOT if rebooted else REASON_GONE
        await store.containers.set_status(rec.id, Status.EXPIRED, reason)
        await service.record_event(rec.id, "expired", reason=reason)
    for sid in await runtime.list_ids():
        if sid not in running:
            await _destroy(runtime, sid)
            logger.info("reconcile: destroyed orphan sandbox", extra={"container_id": sid})
    await store.meta.set("boot_id", boot_id)


async def _restore_egress(egress: ContainerEgress, rec: ContainerRecord) -> None:
    """A running container keeps its egress across a daemon restart; if the new proxy will
    not take its policy, the container stays without a path out (fail closed) and says so."""
    try:
        await egress.restore(rec)
    except (EgressUnavailable, SecretBoxError, ValueError) as exc:
        logger.error(
            "reconcile: egress not restored", extra={"container_id": rec.id, "error": str(exc)}
        )


class IdleReaper:
    """Expires running containers `expires_after.minutes` after `last_active_at`."""

    def __init__(
        self, store: Store, service: ContainerService, metrics: Metrics, interval_s: float
    ) -> None:
        self._store = store
        self._service = service
        self._metrics = metrics
        self._interval = interval_s

    async def run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                logger.exception("reaper sweep failed")
            await asyncio.sleep(self._interval)

    async def sweep(self) -> int:
        expired = 0
        now = int(time.time())
        for rec in await self._store.containers.expirable(now):
            if self._service.last_active(rec) + rec.expires_minutes * 60 > now:
                continue  # touched since, the write still on its way to the store
            reason = f"idle for {rec.expires_minutes} minutes"
            if await self._service.expire(rec.id, reason):
                expired += 1
                self._metrics.reaper_expired.inc()
        self._metrics.reaper_sweeps.inc()
        return expired
