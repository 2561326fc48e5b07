"""The embedded backend: OCI bundles run by runc (or crun), no container engine.

Host-wide names carry the daemon's instance id: runc's state is `<runtime_root>/<instance>/
state`, cgroups are `<cgroup_parent>/<instance>/<id>`. Each shared root in use (the host
skeleton, or a build of an image: sandbox/host/roots.py) is bound at `<runtime_root>/
<instance>/roots/<image>@<build>`, the one path sandboxes' ids must traverse (runc mounts the
root as the sandbox's root user; bind sources it opens as host root), so the state dir itself
stays 0700. A running sandbox holds its own copy of that mount: the view can go before it.

A sandbox made by a daemon before instance scoping (runc state directly in `<runtime_root>`,
cgroup `<cgroup_parent>/<id>`, dir `<state>/sandboxes/<id>`) is adopted, not destroyed: found
through its own dir in this daemon's state dir, driven where it was made.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.agent_client import AgentLimits
from sandbox.cgroups import CgroupError, CgroupLayout, WorkGroup, children
from sandbox.errors import RuntimeFailure
from sandbox.host import loopmount
from sandbox.host.agent import (
    AGENT_READY_TIMEOUT_S,
    AGENT_SCRIPT,
    INTERPRETER_SCRIPT,
    agent_env,
)
from sandbox.host.base import HostRuntime, all_or_nothing
from sandbox.host.mounts import HostPaths
from sandbox.host.roots import Root
from sandbox.host.roots import record as record_root
from sandbox.idranges import IdRanges, IdRangeSettings, InstanceInUse, lock_instance
from sandbox.oci import userns
from sandbox.oci.bundle import BundlePaths, build_config, rlimits
from sandbox.oci.runc import PID_FILE, RUNTIME_ENV, OciCli, check_rlimits
from sandbox.oci.userns import UserNamespace
from sandbox.spec import SandboxSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OciSettings:
    state_dir: Path  # sandboxes/, the rootfs skeleton, templates... (0700)
    runtime_root: Path  # runc state and the root's bind, per instance (tmpfs: gone at reboot)
    binary: str = "runc"
    cgroup_parent: str = "/sandboxd"  # sandboxes' cgroups: <parent>/<instance>/<id>
    agent_limits: AgentLimits = field(default_factory=AgentLimits)
    threads: int = 8
    default_image: str = "host"  # made ready at start; a create names its own (spec.image)
    instance: str = ""  # "" = derived from state_dir
    ids: IdRangeSettings = field(default_factory=IdRangeSettings)


class OciRuntime(HostRuntime):
    name = "oci"

    def __init__(self, settings: OciSettings, seccomp: Mapping[str, Any]) -> None:
        super().__init__(settings, "oci")
        self._s = settings
        self._seccomp = seccomp
        self.run_dir = settings.runtime_root / self.instance
        self.cgroup_base = f"{settings.cgroup_parent}/{self.instance}"
        self._cli = OciCli(settings.binary, self.run_dir / "state", self._executor)
        # Deletes run on the destroy threads (see host.base): creates never wait for them.
        self._destroy_cli = OciCli(settings.binary, self.run_dir / "state", self._destroy_executor)
        self._legacy_cli = OciCli(settings.binary, settings.runtime_root, self._destroy_executor)
        self._legacy: dict[str, str] = {}  # adopted sandbox id -> its cgroup path
        self._uncapped_logged = False
        self._started = False

    async def start(self) -> None:
        if shutil.which(self._s.binary, path=RUNTIME_ENV["PATH"]) is None:
            raise RuntimeFailure(f"OCI runtime {self._s.binary!r}: not found or not executable")
        await self._start_host()
        await self._in_thread(self._make_run_dir)
        await self._adopt_roots()
        await self._prepare_image(self._s.default_image)
        self._started = True
        logger.info(
            "oci runtime ready",
            extra={
                "binary": self._s.binary,
                "cgroup": self._layout.version.value,
                "instance": self.instance,
            },
        )

    def _make_run_dir(self) -> None:
        """The run dir, traversable on the way to the roots' views; the views of an earlier
        start are taken down (running sandboxes hold their own copies)."""
        check_traversable(self._s.runtime_root.parent)  # the root itself is ours to chmod
        for path, mode in ((self._s.runtime_root, 0o711), (self.run_dir, 0o711)):
            path.mkdir(mode=mode, parents=True, exist_ok=True)
            path.chmod(mode)
        (self.run_dir / "state").mkdir(mode=0o700, exist_ok=True)
        (self.run_dir / "roots").mkdir(mode=0o711, exist_ok=True)
        old = [self.run_dir / "rootfs", *(self.run_dir / "roots").iterdir()]
        for view in old:
            _take_down(view)

    def _view(self, root: Root) -> Path:
        return self.run_dir / "roots" / root.key

    def _root_ready(self, root: Root) -> None:
        view = self._view(root)
        _take_down(view)  # an earlier start's, if any
        view.mkdir(mode=0o755, exist_ok=True)
        loopmount.bind_mount(root.tree, view)

    def _root_unused(self, root: Root) -> None:
        _take_down(self._view(root))

    def _cgroup(self, sandbox_id: str) -> str:
        return self._legacy.get(sandbox_id) or f"{self.cgroup_base}/{sandbox_id}"

    def _cli_of(self, sandbox_id: str) -> OciCli:
        """The runc of a sandbox's destroy (on the destroy threads) and state queries."""
        return self._legacy_cli if sandbox_id in self._legacy else self._destroy_cli

    async def _cgroup_of(self, sandbox_id: str) -> str:
        return self._cgroup(sandbox_id)

    def _agent_socket(self, sandbox_id: str) -> Path:
        return self._dir(sandbox_id) / "agent.sock"

    async def _find_agent_pid(self, sandbox_id: str) -> int | None:
        """From the pid file `run` wrote (no runc call), else from runc's state."""
        with contextlib.suppress(OSError, ValueError):  # made before pid files, or gone
            return int(await self._in_thread((self._dir(sandbox_id) / PID_FILE).read_text))
        state = await self._cli_of(sandbox_id).state(sandbox_id)
        return state.pid if state is not None and state.status == "running" else None

    async def create(self, spec: SandboxSpec) -> None:
        """All or nothing, even when the caller is cancelled: the steps run to completion
        in their own task (threads cannot be interrupted), then a cancelled create is undone."""
        assert self._started, "start() first"
        await all_or_nothing(self._create(spec), lambda: self._destroy_quietly(spec.sandbox_id))

    async def _create(self, spec: SandboxSpec) -> None:
        sid = spec.sandbox_id
        try:
            group, pid = await self._in_thread(self._start, spec)
            # The agent's socket was bound before runc ran: handing the agent its work group
            # waits for it to answer, and is the readiness check.
            sock = await self._in_thread(self._hand_over, sid, group, pid, AGENT_READY_TIMEOUT_S)
            await self.agent(sid).adopt(sock)
        except Exception as exc:
            await self._create_failed(sid, exc)
            raise

    def _start(self, spec: SandboxSpec) -> tuple[WorkGroup, int]:
        """Everything on the host in one thread hop: its image's root, the uid range, the
        sandbox's home, config.json and the agent's listening socket, `runc run` in a user
        namespace owned by the sandbox's first host id (its holder starts first and gets ready
        while the home is made; it is let go once runc has joined the namespace), then the
        work group.
        The work group's files (the caller hands them over) and the agent's host pid."""
        root = self._roots.acquire(spec.sandbox_id, spec.image)
        first = self._claim(spec)
        with UserNamespace(first, self._id_range_size, self._reap_later) as namespace:
            home = self._make_dirs(spec, first)
            record_root(home.dir, root)
            namespace.map()
            host = HostPaths(
                workspace=str(home.dir / "data"),
                agent_script=str(AGENT_SCRIPT),
                interpreter_script=str(INTERPRETER_SCRIPT),
                binds=list(root.binds),
                skills=str(home.dir / "skills"),
                egress=str(home.dir / "egress"),
                agent_pycache=root.pycache,
                agent_env=agent_env(dict(root.env)),
            )
            paths = BundlePaths(rootfs=str(self._view(root)), host=host, userns=namespace.path)
            ids = (home.first_id, self._id_range_size)
            config = build_config(spec, paths, ids, self._cgroup(spec.sandbox_id), self._seccomp)
            with _write_bundle(home.dir, json.dumps(config)) as listener:
                self._cli.run_detached(spec.sandbox_id, home.dir, listener.fileno(), rlimits(spec))
            if not namespace.ready() and not self._uncapped_logged:
                self._uncapped_logged = True
                logger.warning(
                    "sandboxes' user namespaces refuse their caps (/proc/sys/user/*): each "
                    "sandbox keeps its own per-user budgets, not the tighter caps inside them"
                )
        try:
            pid = int((home.dir / PID_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise RuntimeFailure(f"runc wrote no pid for {spec.sandbox_id}: {exc}") from exc
        check_rlimits(pid, rlimits(spec))
        self._agent_pids[spec.sandbox_id] = pid
        path = self._cgroup(spec.sandbox_id)
        return self._work_group(spec.sandbox_id, path, spec.memory_bytes), pid

    def _reap_later(self, holder: int) -> None:
        """A released namespace holder is waited for off the create's path."""
        self._destroy_executor.submit(userns.reap, holder)

    async def destroy(self, sandbox_id: str) -> None:
        """Every step is attempted even if an earlier one failed; the first error is raised."""
        await self._forget(sandbox_id)
        errors: list[Exception] = []
        try:
            await self._cli_of(sandbox_id).delete_force(sandbox_id)
        except RuntimeFailure as exc:
            errors.append(exc)
        cgroup_gone = True  # a group is removable only once no process is left in it
        try:
            await self._in_destroy_thread(self._remove_cgroup, sandbox_id)
        except RuntimeFailure as exc:
            errors.append(exc)
            cgroup_gone = False
        try:
            await self._finish_destroy(sandbox_id, errors, processes_gone=cgroup_gone)
        finally:
            if cgroup_gone:
                self._legacy.pop(sandbox_id, None)

    def _remove_cgroup(self, sandbox_id: str) -> None:
        """Remove the group; if processes the OCI runtime could not delete (or never knew
        of: the init of a sandbox whose runc was killed mid-create) keep it busy, SIGKILL
        them first."""
        reader = self._layout.reader(self._cgroup(sandbox_id))
        with contextlib.suppress(CgroupError):
            reader.remove()
            return
        reader.kill_all()
        try:
            reader.remove()
        except CgroupError as exc:
            raise RuntimeFailure(f"cgroup of {sandbox_id} could not be removed: {exc}") from exc

    async def is_running(self, sandbox_id: str) -> bool:
        state = await self._cli.state(sandbox_id)
        if state is None and await self._adopt(sandbox_id):
            state = await self._legacy_cli.state(sandbox_id)
        return state is not None and state.status == "running"

    async def _adopt(self, sandbox_id: str) -> bool:
        """A sandbox made before instance scoping, by this daemon (its dir is in our state
        dir, named by its id): drive it where it was made from now on."""
        if sandbox_id in self._legacy:
            return True
        if self._ids.lookup(sandbox_id) is not None:
            return False
        config = self._dir(sandbox_id) / "config.json"
        try:
            found = json.loads(await self._in_thread(config.read_bytes))
            path = found["linux"]["cgroupsPath"]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if not isinstance(path, str) or not path.endswith(f"/{sandbox_id}"):
            return False
        self._legacy[sandbox_id] = path
        logger.info(
            "adopted a sandbox made before instance scoping", extra={"container_id": sandbox_id}
        )
        return True

    async def list_ids(self) -> list[str]:
        """This instance's sandboxes: its runc state, its cgroups and its own records (id
        claims, and dirs of sandboxes it made before instance scoping, adopted here)."""
        ids = set(await self._cli.list_ids())
        ids.update(await self._in_thread(children, self._layout, self.cgroup_base))
        for sid in await self._host_ids():
            ids.add(sid)
            await self._adopt(sid)
        return sorted(ids)


@contextlib.contextmanager
def _write_bundle(sdir: Path, config: str) -> Iterator[socket.socket]:
    """Write config.json (0600) and bind the agent's listening socket (handed to runc as
    fd 3); the daemon's copy of the socket is closed at the end of the block."""
    fd = os.open(sdir / "config.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with open(fd, "w") as f:
        f.write(config)
    sock_path = sdir / "agent.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with listener:
        listener.bind(str(sock_path))
        sock_path.chmod(0o600)
        listener.listen(64)
        yield listener


def _take_down(view: Path) -> bool:
    """Unmount a root's view and remove its mount point; whether it was mounted."""
    mounted = False
    for _ in range(loopmount.mount_count(view)):
        loopmount.unmount(view)
        mounted = True
    with contextlib.suppress(OSError):
        view.rmdir()
    return mounted


def check_traversable(path: Path) -> None:
    """Sandboxes' ids must traverse every directory down to the runtime root (where their
    root is bound): `path` and each existing directory above it need o+x, or runc fails
    later with an obscure EACCES."""
    for ancestor in reversed([path, *path.parents]):
        if not ancestor.exists():
            return
        if not ancestor.stat().st_mode & 0o001:
            raise RuntimeFailure(
                f"{ancestor} is not searchable by other users (mode "
                f"{ancestor.stat().st_mode & 0o7777:o}); sandboxes run as unprivileged uids "
                "and need o+x on every directory above runtime.runtime_root"
            )


def forget_instance(runtime_root: Path, cgroup_parents: Sequence[str], instance: str) -> list[str]:
    """Remove what a daemon instance keeps on the host between its sandboxes (the shared
    roots' binds, its runtime dirs, its cgroup parents, its id-range claims) once it has no
    sandbox left; what was removed. For uninstalls and throwaway daemons (tests, checks)."""
    removed: list[str] = []
    base = runtime_root / instance
    views = [base / "rootfs"]  # (the one root of an older daemon)
    with contextlib.suppress(OSError):
        views += list((base / "roots").iterdir())
    for view in views:
        if _take_down(view):
            removed.append(f"mount {view}")
    for path in (base / "roots", base / "state", base):
        with contextlib.suppress(OSError):  # each on its own: one may never have been made
            path.rmdir()
            removed.append(str(path))
    layout = CgroupLayout.detect()
    for parent in cgroup_parents:
        for directory in layout.dirs(f"{parent}/{instance}"):
            with contextlib.suppress(FileNotFoundError):
                directory.rmdir()
                removed.append(str(directory))
    ranges = IdRanges(IdRangeSettings(), instance)
    for sandbox_id in ranges.load():
        ranges.release(sandbox_id)
        removed.append(f"id range of {sandbox_id}")
    with contextlib.suppress(InstanceInUse, OSError):
        fd = lock_instance(IdRangeSettings(), instance, Path("/"))  # not held by a daemon
        lock = IdRangeSettings().registry.parent / "instances" / f"{instance}.lock"
        lock.unlink()
        os.close(fd)
        removed.append(str(lock))
    return removed
