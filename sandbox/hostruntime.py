"""The part of a runtime backend that lives on the host, the same for oci and docker: the
thread pools for blocking host work (destroys have their own, so a burst of slow destroys
cannot hold up creates), the per-sandbox dir and workspace, the agent clients, the
cgroup readers, skills, and the host side of a destroy. A backend adds how a sandbox is
started, stopped and found (runc or the engine), and where its agent socket and cgroup are."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sandbox.agent_client import AgentClient, AgentLimits
from sandbox.cgroups import CgroupCounters, CgroupError, CgroupLayout, CgroupReader, KillCounters
from sandbox.errors import HostStorageFull, RuntimeFailure, SandboxError
from sandbox.hostdirs import agent_pycache, disk_full, remove_sandbox_dir, sandbox_dir
from sandbox.oci import skills, workspace
from sandbox.skill_archive import SkillArchiveError
from sandbox.spec import SkillFiles

logger = logging.getLogger(__name__)

# Threads for the host side of destroys (unmounting and deleting a workspace whose dirty pages
# are still being written takes seconds); more destroys than this wait for one. They run at a
# lower CPU priority, so the kernel work of a burst of destroys yields to creates and execs.
DESTROY_THREADS = 4
DESTROY_NICE = 10


class HostRuntime(abc.ABC):
    def __init__(
        self, state_dir: Path, threads: int, thread_prefix: str, agent_limits: AgentLimits
    ) -> None:
        self._state_dir = state_dir
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix=thread_prefix)
        self._destroy_executor = ThreadPoolExecutor(
            DESTROY_THREADS, f"{thread_prefix}-destroy", _lower_priority
        )
        self._layout = CgroupLayout.detect()
        self._agent_limits = agent_limits
        self._agents: dict[str, AgentClient] = {}
        self._readers: dict[str, CgroupReader] = {}  # for kill_counters, on every exec
        self._workspaces = workspace.Workspaces(state_dir / "templates")
        self._pycache = ""  # host dir bound at AGENT_PYCACHE ("": none), set by start()

    @property
    def cgroup_layout(self) -> CgroupLayout:
        return self._layout

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _in_destroy_thread(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._destroy_executor, fn, *args)

    def _make_state_dirs(self) -> None:
        """The state dir and sandboxes/: the sandboxes' uids must traverse (not list) them on
        the way to their binds."""
        for path in (self._state_dir, self._state_dir / "sandboxes"):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o711)

    async def _compile_agent(self, root: Path) -> None:
        """The agent's bytecode for sandboxes on `root` (see hostdirs.agent_pycache)."""
        self._pycache = await self._in_thread(agent_pycache, self._state_dir, root)

    def _dir(self, sandbox_id: str) -> Path:
        return sandbox_dir(self._state_dir, sandbox_id)

    def egress_dir(self, sandbox_id: str) -> Path:
        return self._dir(sandbox_id) / "egress"

    @abc.abstractmethod
    def _agent_socket(self, sandbox_id: str) -> Path:
        """Where the daemon connects to the sandbox's agent."""

    @abc.abstractmethod
    async def _cgroup_of(self, sandbox_id: str) -> str | None:
        """The sandbox's cgroup path, or None if the backend no longer knows the sandbox."""

    @abc.abstractmethod
    async def destroy(self, sandbox_id: str) -> None: ...

    def agent(self, sandbox_id: str) -> AgentClient:
        agent = self._agents.get(sandbox_id)
        if agent is None:
            agent = AgentClient(self._agent_socket(sandbox_id), self._agent_limits)
            self._agents[sandbox_id] = agent
        return agent

    async def _create_failed(self, sandbox_id: str, exc: Exception) -> None:
        """Undo a failed create; a full disk becomes HostStorageFull, any other failure that
        is not a SandboxError a RuntimeFailure; a SandboxError is the caller's to re-raise."""
        await self._destroy_quietly(sandbox_id)
        if disk_full(exc):
            raise HostStorageFull(f"no space left for sandbox {sandbox_id}") from exc
        if not isinstance(exc, SandboxError):
            raise RuntimeFailure(f"create of {sandbox_id} failed: {exc!r}") from exc

    async def _destroy_quietly(self, sandbox_id: str) -> None:
        try:
            await self.destroy(sandbox_id)
        except Exception:
            logger.exception(
                "cleanup of a failed create failed", extra={"container_id": sandbox_id}
            )

    async def install_skills(self, sandbox_id: str, found: Sequence[SkillFiles]) -> None:
        try:
            await self._in_thread(skills.install, self._dir(sandbox_id) / "skills", list(found))
        except (OSError, SkillArchiveError) as exc:
            raise RuntimeFailure(f"installing skills in {sandbox_id} failed: {exc}") from exc

    async def _forget(self, sandbox_id: str) -> None:
        """The first step of a destroy: no more agent connections or cached readers."""
        self._readers.pop(sandbox_id, None)
        agent = self._agents.pop(sandbox_id, None)
        if agent is not None:
            await agent.close()

    async def _finish_destroy(self, sandbox_id: str, errors: list[Exception]) -> None:
        """The last steps of a destroy, each attempted: unmount and delete the workspace,
        remove the sandbox dir; then raise the first of `errors` (the backend's) and theirs."""
        sdir = self._dir(sandbox_id)
        for step, args in (
            (workspace.destroy, (sdir / "workspace.img", sdir / "data")),
            (remove_sandbox_dir, (sdir,)),
        ):
            try:
                await self._in_destroy_thread(step, *args)
            except (RuntimeFailure, OSError) as exc:
                errors.append(exc)
        if errors:
            raise RuntimeFailure(f"destroy of {sandbox_id} incomplete: {errors[0]}") from errors[0]

    async def counters(self, sandbox_id: str) -> CgroupCounters | None:
        path = await self._cgroup_of(sandbox_id)
        if path is None:
            return None
        try:
            counters: CgroupCounters = await self._in_thread(self._layout.reader(path).counters)
        except CgroupError:
            return None
        return counters

    async def kill_counters(self, sandbox_id: str) -> KillCounters | None:
        # Two reads of kernel pseudo-files (no disk I/O, microseconds) on the exec hot path:
        # done on the loop, since a thread hop would cost more than the reads, through a
        # reader kept per sandbox (its file paths are built once).
        reader = self._readers.get(sandbox_id)
        if reader is None:
            path = await self._cgroup_of(sandbox_id)
            if path is None:
                return None
            reader = self._readers[sandbox_id] = self._layout.reader(path)
        try:
            return reader.kill_counters()
        except CgroupError:
            return None

    async def close(self) -> None:
        for agent in self._agents.values():
            await agent.close()
        self._agents.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._destroy_executor.shutdown(wait=False, cancel_futures=True)


def _lower_priority() -> None:
    """Thread initializer: on Linux the nice value is per thread (who=0: this thread)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, DESTROY_NICE)
