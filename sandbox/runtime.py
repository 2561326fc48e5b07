"""The runtime seam: what the daemon may ask of a sandbox backend, and nothing more."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from sandbox.agent_client import AgentClient
from sandbox.cgroups import CgroupCounters, KillCounters
from sandbox.spec import SandboxSpec, SkillFiles


class Runtime(Protocol):
    """A sandbox backend (oci, docker, ...).

    Operations are idempotent per sandbox id, so a retry or the reconciler can finish a job
    that a cancelled call left half done.
    """

    name: str

    async def start(self) -> None:
        """Check what the backend needs (binary, engine, dirs, image) and make its host-side
        state; before anything else is started, and before any other call. RuntimeFailure
        says what is missing."""
        ...

    async def create(self, spec: SandboxSpec) -> None:
        """Start a sandbox whose agent answers; all or nothing (destroys what it made on error)."""
        ...

    async def destroy(self, sandbox_id: str) -> None:
        """Kill every process and free every resource of the sandbox; no error if absent."""
        ...

    async def is_running(self, sandbox_id: str) -> bool: ...

    async def list_ids(self) -> list[str]:
        """Ids of every sandbox of this daemon instance on the host (for reconciliation);
        never another instance's."""
        ...

    async def agent_pid(self, sandbox_id: str) -> int | None:
        """The host pid of the sandbox's agent while it runs (its death ends the sandbox)."""
        ...

    async def on_current_build(self, sandbox_id: str) -> bool:
        """Whether the sandbox runs on its image's current build (a pooled sandbox made
        before a rebuild does not, and is not handed out)."""
        ...

    def egress_dir(self, sandbox_id: str) -> Path:
        """Host directory bound read-only at EGRESS_DIR in the sandbox, made by create():
        owned by the host uid the sandbox's agent runs as, mode 0700, so only that agent
        (and root) can reach a socket in it."""
        ...

    def agent(self, sandbox_id: str) -> AgentClient:
        """The (pooled) client of the sandbox's agent."""
        ...

    async def counters(self, sandbox_id: str) -> CgroupCounters | None:
        """Cgroup counters, or None if the sandbox's cgroup is gone."""
        ...

    async def kill_counters(self, sandbox_id: str) -> KillCounters | None:
        """Just the OOM-kill and pids-limit counters; cheap enough to read around every exec."""
        ...

    async def install_skills(self, sandbox_id: str, skills: Sequence[SkillFiles]) -> None:
        """Unpack validated skill zips read-only at /mnt/skills/<name>/ and write
        /mnt/skills/index.json; the sandbox exists already (pooled or fresh)."""
        ...

    async def close(self) -> None:
        """Release daemon-side resources; sandboxes keep running."""
        ...
