"""The part of a runtime backend that lives on the host, the same for oci and docker: the
thread pools for blocking host work (destroys have their own, so a burst of slow destroys
cannot hold up creates), the sandbox's uid range and its dir and workspace, the agent
clients, the cgroup readers and the work group, skills, the host side of a destroy, and
the all-or-nothing create both backends run theirs in.
A backend adds how a sandbox is started, stopped and found (runc or the engine), and where
its agent socket and cgroup are.

The host boundary (SECURITY.md has its tests): every sandbox gets a uid range of its own,
claimed in the host-wide registry (sandbox/idranges.py) before anything else exists;
everything it owns on the host is 0700 to root and that range; its processes run in the work
sub-group of its cgroup, below the agent (sandbox/cgroups.py); and every host-wide name
carries the daemon's instance id, so this daemon never reconciles another one's sandboxes
away.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sandbox import images
from sandbox.agent_client import AgentClient, AgentLimits, hand_over_work_group
from sandbox.cgroups import (
    CgroupCounters,
    CgroupError,
    CgroupLayout,
    CgroupReader,
    KillCounters,
    WorkGroup,
    make_work_group,
)
from sandbox.errors import HostStorageFull, RuntimeFailure, SandboxError
from sandbox.host import skills, workspace
from sandbox.host.agent import AGENT_READY_TIMEOUT_S
from sandbox.host.dirs import (
    instance_of,
    make_private_dir,
    make_sandbox_dir,
    make_state_dirs,
    remove_sandbox_dir,
    sandbox_dir,
)
from sandbox.host.roots import Root, Roots
from sandbox.idranges import IdRanges, IdRangeSettings, lock_instance
from sandbox.skill_archive import SkillArchiveError
from sandbox.spec import AGENT_OOM_ADJ, SANDBOX_GID, SANDBOX_UID, SandboxSpec, SkillFiles

logger = logging.getLogger(__name__)

# Threads for the host side of destroys (unmounting and deleting a workspace whose dirty pages
# are still being written takes seconds); more destroys than this wait for one. They run at a
# lower CPU priority, so the kernel work of a burst of destroys yields to creates and execs.
DESTROY_THREADS = 4
DESTROY_NICE = 10


class HostSettings(Protocol):
    """What both backends' settings carry for the host side."""

    @property
    def state_dir(self) -> Path: ...
    @property
    def threads(self) -> int: ...
    @property
    def agent_limits(self) -> AgentLimits: ...
    @property
    def instance(self) -> str: ...  # "" = derived from the state dir (dirs.instance_of)
    @property
    def ids(self) -> IdRangeSettings: ...


@dataclass(frozen=True)
class SandboxHome:
    """A sandbox's place on the host: its dir and the first host id of its range."""

    dir: Path
    first_id: int

    @property
    def owner(self) -> tuple[int, int]:
        """The host uid and gid the sandbox's user (SANDBOX_UID inside) is."""
        return self.first_id + SANDBOX_UID, self.first_id + SANDBOX_GID


class HostRuntime(abc.ABC):
    def __init__(self, host: HostSettings, thread_prefix: str) -> None:
        self._state_dir = host.state_dir
        self.instance = host.instance or instance_of(host.state_dir)
        self._executor = ThreadPoolExecutor(host.threads, thread_name_prefix=thread_prefix)
        self._destroy_executor = ThreadPoolExecutor(
            DESTROY_THREADS, f"{thread_prefix}-destroy", _lower_priority
        )
        self._layout = CgroupLayout.detect()
        self._agent_limits = host.agent_limits
        self._ids = IdRanges(host.ids, self.instance)
        self._id_settings = host.ids
        self._id_range_size = host.ids.size
        self._agents: dict[str, AgentClient] = {}
        self._readers: dict[str, CgroupReader] = {}  # for kill_counters, on every exec
        self._agent_pids: dict[str, int] = {}  # learnt at create (or first asked): no call
        self._workspaces = workspace.Workspaces(host.state_dir / "templates")
        # The shared roots sandboxes run on, per (image, build); a backend's views of them.
        self._roots = Roots(host.state_dir, self._root_ready, self._root_unused)
        self._pin_refused = False
        self._instance_lock = -1  # held from start() to close()

    @property
    def cgroup_layout(self) -> CgroupLayout:
        return self._layout

    async def _in_thread[**P, T](self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def _in_destroy_thread[**P, T](
        self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._destroy_executor, lambda: fn(*args, **kwargs))

    async def _start_host(self) -> None:
        """Hold the instance id, make the state dirs (0700), load this instance's id-range
        claims (after a restart) and remove sandbox dirs no claim names (left by a reboot,
        which ends sandboxes and the registry on /run, not the state dir)."""
        if self._instance_lock < 0:
            self._instance_lock = await self._in_thread(
                lock_instance, self._id_settings, self.instance, self._state_dir
            )
        await self._in_thread(make_state_dirs, self._state_dir)
        await self._in_thread(_check_instance_of, self._state_dir, self.instance)
        claimed = await self._in_thread(self._ids.load)
        await self._in_thread(self._remove_unclaimed_dirs, {str(f) for f in claimed.values()})

    def _remove_unclaimed_dirs(self, claimed: set[str]) -> None:
        """Sandbox dirs named by a range this instance does not hold (our state dir is ours
        alone, so nothing else can be using them). Blocking."""
        with contextlib.suppress(FileNotFoundError):
            for sdir in (self._state_dir / "sandboxes").iterdir():
                if sdir.name.isdigit() and sdir.name not in claimed:
                    logger.info("removing a sandbox dir nothing claims", extra={"dir": str(sdir)})
                    _clear_dir(sdir)

    def _root_ready(self, root: Root) -> None:  # noqa: B027 (most backends need no view)
        """A root is used for the first time (the backend makes its view of it). Blocking."""

    def _root_unused(self, root: Root) -> None:  # noqa: B027
        """A root no sandbox uses any more and no create will (it is not current). Blocking."""

    async def on_current_build(self, sandbox_id: str) -> bool:
        return await self._in_thread(self._roots.on_current_build, sandbox_id)

    async def _adopt_roots(self) -> None:
        """After a restart: hold the builds this instance's sandboxes run on."""

        def adopt() -> None:
            for sandbox_id in self._ids.load():
                self._roots.adopt(sandbox_id, self._dir(sandbox_id))

        await self._in_thread(adopt)

    async def _prepare_image(self, image: str) -> Root:
        """The default image, ready before the first create (RuntimeFailure: unusable)."""
        try:
            return await self._in_thread(self._roots.prepare, image)
        except (images.ImageError, OSError) as exc:
            raise RuntimeFailure(f"image {image!r}: {exc}") from exc

    def _dir(self, sandbox_id: str) -> Path:
        """<state>/sandboxes/<first id of its range>; a sandbox made before ranges were
        claimed (adopted after an upgrade) keeps <state>/sandboxes/<sandbox id>."""
        first = self._ids.lookup(sandbox_id)
        return sandbox_dir(self._state_dir, sandbox_id if first is None else str(first))

    def first_host_id(self, sandbox_id: str) -> int | None:
        """The first host id of the sandbox's uid range (None: it has none, or is older)."""
        return self._ids.lookup(sandbox_id)

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

    async def agent_pid(self, sandbox_id: str) -> int | None:
        """The host pid of the sandbox's agent (its init), None if it is not running; asked
        of the backend once per sandbox and daemon start, and checked to be a process of
        the sandbox's cgroup each time (a pid is reused once its process is gone)."""
        pid = self._agent_pids.get(sandbox_id)
        if pid is None:
            pid = await self._find_agent_pid(sandbox_id)
            if pid is None:
                return None
        path = await self._cgroup_of(sandbox_id)
        if path is None or not _in_cgroup(pid, path):
            self._agent_pids.pop(sandbox_id, None)
            return None
        self._agent_pids[sandbox_id] = pid
        return pid

    @abc.abstractmethod
    async def _find_agent_pid(self, sandbox_id: str) -> int | None:
        """The backend's answer for agent_pid()."""

    def agent(self, sandbox_id: str) -> AgentClient:
        agent = self._agents.get(sandbox_id)
        if agent is None:
            agent = AgentClient(self._agent_socket(sandbox_id), self._agent_limits)
            self._agents[sandbox_id] = agent
        return agent

    def _make_home(self, spec: SandboxSpec) -> SandboxHome:
        """Claim the sandbox's uid range, then make its home on the host. Blocking."""
        return self._make_dirs(spec, self._claim(spec))

    def _claim(self, spec: SandboxSpec) -> int:
        """The first host id of the sandbox's own uid range, claimed now. Blocking."""
        return self._ids.claim(spec.sandbox_id)

    def _make_dirs(self, spec: SandboxSpec, first: int) -> SandboxHome:
        """The sandbox's dir (0700 root), skills (0750, its group), egress dir (0700, its
        user) and workspace. Blocking."""
        home = SandboxHome(self._dir(spec.sandbox_id), first)
        if home.dir.exists():  # left by a sandbox of this range before a reboot: ours to clear
            _clear_dir(home.dir)
        make_sandbox_dir(home.dir)
        make_private_dir(home.dir / "skills", (0, home.owner[1]), 0o750)
        make_private_dir(home.dir / "egress", home.owner)
        self._workspaces.create(home.dir / "data", spec.limits.workspace_bytes, home.owner)
        return home

    async def _confine(self, spec: SandboxSpec) -> None:
        """The last step of a create, the agent answering: sandbox code goes to the work
        group (its memory limit is the tier), and the agent's OOM score is pinned."""
        sid = spec.sandbox_id
        path, pid = await self._cgroup_of(sid), await self.agent_pid(sid)
        if path is None or pid is None:
            raise RuntimeFailure(f"sandbox {sid} stopped while starting")

        def confine() -> socket.socket:
            group = self._work_group(sid, path, spec.memory_bytes)
            return self._hand_over(sid, group, pid, AGENT_READY_TIMEOUT_S)

        await self.agent(sid).adopt(await self._in_thread(confine))

    def _work_group(self, sid: str, path: str, memory_bytes: int) -> WorkGroup:
        """Make the sandbox's work group (see cgroups.make_work_group). Blocking."""
        try:
            return make_work_group(self._layout, path, memory_bytes)
        except CgroupError as exc:
            raise RuntimeFailure(f"work group of {sid}: {exc}") from exc

    def _hand_over(self, sid: str, group: WorkGroup, pid: int, timeout_s: float) -> socket.socket:
        """Give the agent its work group (waiting up to `timeout_s` for it to answer), then
        pin its OOM score; the group's files are closed either way. The connection it went
        over, for the agent's client to keep. Blocking."""
        try:
            sock = hand_over_work_group(self._agent_socket(sid), group.mode, group.fds, timeout_s)
        finally:
            group.close()
        try:
            self._pin_agent(pid)
        except BaseException:
            sock.close()
            raise
        return sock

    def _pin_agent(self, pid: int) -> None:
        """Lower the agent's OOM score for host-wide OOMs, leaving the floor its children
        inherit at 0 (see spec.AGENT_OOM_ADJ). Needs CAP_SYS_RESOURCE: without it, the work
        group alone keeps the agent out of its sandbox's OOMs."""
        try:
            with open(f"/proc/{pid}/oom_adj", "w") as f:
                f.write(str(AGENT_OOM_ADJ))
        except PermissionError:
            if not self._pin_refused:
                self._pin_refused = True
                logger.warning("agents' oom_score_adj not pinned: no CAP_SYS_RESOURCE")
        except FileNotFoundError as exc:
            raise RuntimeFailure("the agent exited while starting") from exc

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
        self._agent_pids.pop(sandbox_id, None)
        agent = self._agents.pop(sandbox_id, None)
        if agent is not None:
            await agent.close()

    async def _finish_destroy(
        self, sandbox_id: str, errors: list[Exception], processes_gone: bool
    ) -> None:
        """The last steps of a destroy, each attempted: unmount the workspace and remove the
        sandbox dir; once no process (`processes_gone`, the backend knows) and no dir of the
        sandbox is left, give its uid range back. Then raise the first error (the backend's
        in `errors`, then these steps')."""
        sdir = self._dir(sandbox_id)
        dir_gone = True
        for step, path in ((workspace.destroy, sdir / "data"), (remove_sandbox_dir, sdir)):
            try:
                await self._in_destroy_thread(step, path)
            except (RuntimeFailure, OSError) as exc:
                errors.append(exc)
                dir_gone = False
        if processes_gone and dir_gone:
            await self._in_thread(self._ids.release, sandbox_id)
            await self._in_destroy_thread(self._roots.release, sandbox_id)
        if errors:
            raise RuntimeFailure(f"destroy of {sandbox_id} incomplete: {errors[0]}") from errors[0]

    async def _host_ids(self) -> set[str]:
        """Sandboxes this daemon has on the host by its own records: its id-range claims,
        and the dirs of sandboxes made before ranges were claimed (named by their id)."""
        found = set(await self._in_thread(self._ids.load))

        def legacy_dirs() -> set[str]:
            with contextlib.suppress(FileNotFoundError):
                names = [p.name for p in (self._state_dir / "sandboxes").iterdir()]
                return {n for n in names if not n.isdigit()}
            return set()

        return found | await self._in_thread(legacy_dirs)

    async def counters(self, sandbox_id: str) -> CgroupCounters | None:
        path = await self._cgroup_of(sandbox_id)
        if path is None:
            return None
        try:
            return await self._in_thread(self._layout.reader(path).counters)
        except CgroupError:
            return None

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
        self._roots.close()
        if self._instance_lock >= 0:
            os.close(self._instance_lock)
            self._instance_lock = -1


def disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, RuntimeFailure) and "No space left on device" in str(exc)


async def all_or_nothing(
    create: Coroutine[Any, Any, None], undo: Callable[[], Awaitable[None]]
) -> None:
    """Run `create` to completion even when the caller is cancelled (its steps run in
    threads that cannot be interrupted), then undo a cancelled create."""
    task = asyncio.ensure_future(create)  # scoped, not background: awaited whatever happens
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.shield(task)
        await asyncio.shield(undo())
        raise


def _check_instance_of(state_dir: Path, instance: str) -> None:
    """A state dir keeps the instance id it was first used with: changing it would leave the
    sandboxes of the old one running, unmanaged. Blocking."""
    marker = state_dir / "instance"
    try:
        found = marker.read_text().strip()
    except FileNotFoundError:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with open(fd, "w") as f:
            f.write(instance + "\n")
        return
    if found != instance:
        raise RuntimeFailure(
            f"{state_dir} belongs to instance {found!r}, not {instance!r}: set runtime.instance "
            f"back to {found!r} (or delete every container first and remove {marker})"
        )


def _in_cgroup(pid: int, path: str) -> bool:
    """Is process `pid` in the group `path` (or a group below it)? A small read of
    /proc/<pid>/cgroup; False if there is no such process."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read(1 << 16).splitlines()
    except OSError:
        return False
    groups = (line.split(":", 2)[-1] for line in lines)
    return any(group == path or group.startswith(path + "/") for group in groups)


def _clear_dir(sdir: Path) -> None:
    """Remove a stale sandbox dir, its workspace unmounted first (lazily if busy)."""
    workspace.destroy(sdir / "data")
    remove_sandbox_dir(sdir)


def _lower_priority() -> None:
    """Thread initializer: on Linux the nice value is per thread (who=0: this thread)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, DESTROY_NICE)
