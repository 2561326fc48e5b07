"""Admission control: a sandbox exists only if the host can honour its memory tier.

The ledger holds what every sandbox this daemon has on the host may use (running containers,
creates in flight, the warm pool): its tier plus its agent's reserve (AGENT_RESERVE_BYTES, the
sandbox's cgroup limit is the sum). A create is admitted while the committed total plus its
own stays within host RAM x `[containers] memory_overcommit`; a tier bigger than host RAM is
never admitted. `AdmittingRuntime` puts the ledger in front of a runtime: the one place every
sandbox is made and destroyed, whoever asks (API, pool, reconciler), so no path forgets it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from daemon.errors import CapacityExceeded, InvalidRequest
from sandbox.agent_client import AgentClient
from sandbox.cgroups import CgroupCounters, KillCounters
from sandbox.runtime import Runtime
from sandbox.spec import AGENT_RESERVE_BYTES, MEMORY_TIERS, SandboxSpec, SkillFiles

logger = logging.getLogger(__name__)

GIB = 1 << 30


def host_memory_bytes(meminfo: Path = Path("/proc/meminfo")) -> int:
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"no MemTotal in {meminfo}")


def tier_name(memory_bytes: int) -> str:
    for name, size in MEMORY_TIERS.items():
        if size == memory_bytes:
            return name
    return f"{memory_bytes / GIB:g} GiB"


class Admission:
    """The ledger: sandbox id -> tier bytes, against `host_bytes` x `overcommit`."""

    def __init__(self, host_bytes: int, overcommit: float) -> None:
        self.host_bytes = host_bytes
        self.capacity = int(host_bytes * overcommit)
        self._overcommit = overcommit
        self._tiers: dict[str, int] = {}
        self.released = asyncio.Event()  # set whenever room was freed (the pool waits on it)

    @property
    def committed(self) -> int:
        return sum(self._tiers.values())

    def fits(self, memory_bytes: int) -> bool:
        """Would a sandbox of this tier be admitted now?"""
        needed = memory_bytes + AGENT_RESERVE_BYTES
        return memory_bytes <= self.host_bytes and self.committed + needed <= self.capacity

    def reserve(self, sandbox_id: str, memory_bytes: int) -> None:
        """Admit a sandbox of this tier or raise (nothing is recorded then). Synchronous: two
        creates cannot both take the last room."""
        if sandbox_id in self._tiers:
            return
        tier = tier_name(memory_bytes)
        if memory_bytes > self.host_bytes:
            raise InvalidRequest(
                f"The {tier} memory tier is larger than this host's memory "
                f"({self.host_bytes / GIB:.1f} GiB); choose a smaller memory_limit.",
                param="memory_limit",
            )
        if not self.fits(memory_bytes):
            free = max(self.capacity - self.committed, 0)
            raise CapacityExceeded(
                f"No room for a {tier} container: {self.committed / GIB:.1f} of "
                f"{self.capacity / GIB:.1f} GiB are committed on this host to sandboxes' "
                f"tiers and agents ({free / GIB:.1f} GiB free; memory_overcommit "
                f"{self._overcommit:g} x {self.host_bytes / GIB:.1f} GiB RAM). Delete a "
                "container or retry later."
            )
        self._tiers[sandbox_id] = memory_bytes + AGENT_RESERVE_BYTES

    def adopt(self, sandbox_id: str, memory_bytes: int) -> None:
        """Record a sandbox of this tier that already exists (found running), room or not."""
        self._tiers[sandbox_id] = memory_bytes + AGENT_RESERVE_BYTES

    def release(self, sandbox_id: str) -> None:
        if self._tiers.pop(sandbox_id, None) is not None:
            self.released.set()


class AdmittingRuntime:
    """A Runtime whose creates go through the ledger and whose destroys give room back."""

    def __init__(self, inner: Runtime, admission: Admission) -> None:
        self.inner = inner
        self.admission = admission
        self.name = inner.name

    async def start(self) -> None:
        await self.inner.start()

    async def create(self, spec: SandboxSpec) -> None:
        self.admission.reserve(spec.sandbox_id, spec.memory_bytes)
        try:
            await self.inner.create(spec)
        except BaseException:
            self.admission.release(spec.sandbox_id)
            raise

    async def destroy(self, sandbox_id: str) -> None:
        """Room comes back only once the sandbox is gone (a failed destroy keeps it: its
        processes may still use memory until the reconciler finishes the job)."""
        await self.inner.destroy(sandbox_id)
        self.admission.release(sandbox_id)

    async def is_running(self, sandbox_id: str) -> bool:
        return await self.inner.is_running(sandbox_id)

    async def list_ids(self) -> list[str]:
        return await self.inner.list_ids()

    async def agent_pid(self, sandbox_id: str) -> int | None:
        return await self.inner.agent_pid(sandbox_id)

    async def on_current_build(self, sandbox_id: str) -> bool:
        return await self.inner.on_current_build(sandbox_id)

    def egress_dir(self, sandbox_id: str) -> Path:
        return self.inner.egress_dir(sandbox_id)

    def agent(self, sandbox_id: str) -> AgentClient:
        return self.inner.agent(sandbox_id)

    async def counters(self, sandbox_id: str) -> CgroupCounters | None:
        return await self.inner.counters(sandbox_id)

    async def kill_counters(self, sandbox_id: str) -> KillCounters | None:
        return await self.inner.kill_counters(sandbox_id)

    async def install_skills(self, sandbox_id: str, skills: Sequence[SkillFiles]) -> None:
        await self.inner.install_skills(sandbox_id, skills)

    async def close(self) -> None:
        await self.inner.close()
