"""The embedded backend: OCI bundles run by runc (or crun), no container engine."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox import images
from sandbox.agent_client import AgentLimits
from sandbox.cgroups import (
    CgroupError,
    children,
)
from sandbox.errors import RuntimeFailure
from sandbox.hostdirs import (
    AGENT_READY_TIMEOUT_S,
    AGENT_SCRIPT,
    INTERPRETER_SCRIPT,
    all_or_nothing,
    make_private_dir,
    make_sandbox_dir,
)
from sandbox.hostruntime import HostRuntime
from sandbox.oci import rootfs, skills
from sandbox.oci.bundle import BundlePaths, build_config
from sandbox.oci.runc import RUNTIME_ENV, OciCli
from sandbox.spec import SANDBOX_GID, SANDBOX_UID, SandboxSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OciSettings:
    state_dir: Path  # sandboxes/<id>/ and the rootfs skeleton live here
    runtime_root: Path  # the OCI runtime's own state (tmpfs: gone after a reboot)
    binary: str = "runc"
    uid_base: int = 100_000
    cgroup_parent: str = "/sandboxd"
    agent_limits: AgentLimits = field(default_factory=AgentLimits)
    threads: int = 8
    image: str = ""  # "" = the host skeleton (+ host binds); NAME = an image dir (no binds)


class OciRuntime(HostRuntime):
    name = "oci"

    def __init__(self, settings: OciSettings, seccomp: Mapping[str, Any]) -> None:
        super().__init__(settings.state_dir, settings.threads, "oci", settings.agent_limits)
        self._s = settings
        self._seccomp = seccomp
        self._cli = OciCli(settings.binary, settings.runtime_root, self._executor)
        self._destroy_cli = OciCli(settings.binary, settings.runtime_root, self._destroy_executor)
        self._rootfs: Path | None = None
        self._binds: list[tuple[str, str]] = []

    async def start(self) -> None:
        if shutil.which(self._s.binary, path=RUNTIME_ENV["PATH"]) is None:
            raise RuntimeFailure(f"OCI runtime {self._s.binary!r}: not found or not executable")
        self._s.runtime_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._make_state_dirs()
        await self._in_thread(_check_traversable, self._s.state_dir)
        if self._s.image:
            try:
                built = await self._in_thread(images.load, self._s.state_dir, self._s.image)
            except images.ImageError as exc:
                raise RuntimeFailure(str(exc)) from exc
            self._rootfs, self._binds = built.rootfs, []
        else:
            skeleton = await self._in_thread(rootfs.ensure_skeleton, self._s.state_dir / "rootfs")
            self._rootfs, self._binds = skeleton, rootfs.host_binds()
        await self._compile_agent(self._rootfs)
        logger.info(
            "oci runtime ready",
            extra={"binary": self._s.binary, "cgroup": self._layout.version.value},
        )

    def _cgroup(self, sandbox_id: str) -> str:
        return f"{self._s.cgroup_parent}/{sandbox_id}"

    async def _cgroup_of(self, sandbox_id: str) -> str:
        return self._cgroup(sandbox_id)

    def _agent_socket(self, sandbox_id: str) -> Path:
        return self._dir(sandbox_id) / "agent.sock"

    async def create(self, spec: SandboxSpec) -> None:
        """All or nothing, even when the caller is cancelled: the steps run to completion
        in their own task (threads cannot be interrupted), then a cancelled create is undone."""
        assert self._rootfs is not None, "start() first"
        await all_or_nothing(
            self._create(spec, self._rootfs), lambda: self._destroy_quietly(spec.sandbox_id)
        )

    async def _create(self, spec: SandboxSpec, root: Path) -> None:
        sid = spec.sandbox_id
        sdir = self._dir(sid)
        try:
            listener = await self._in_thread(self._prepare, spec, sdir, root)
            with listener:
                await self._cli.run_detached(sid, sdir, listener.fileno())
            await self.agent(sid).wait_ready(AGENT_READY_TIMEOUT_S)
        except Exception as exc:
            await self._create_failed(sid, exc)
            raise

    def _prepare(self, spec: SandboxSpec, sdir: Path, root: Path) -> socket.socket:
        """Everything on the host before `runc run`, in one thread hop: the sandbox dir, its
        skills and egress dirs, the workspace, config.json and the agent's listening socket."""
        make_sandbox_dir(sdir)
        skills.make_dir(sdir / "skills")
        owner = (self._s.uid_base + SANDBOX_UID, self._s.uid_base + SANDBOX_GID)
        make_private_dir(sdir / "egress", owner)
        self._workspaces.create(
            sdir / "workspace.img", sdir / "data", spec.limits.workspace_bytes, owner
        )
        paths = BundlePaths(
            rootfs=str(root),
            workspace=str(sdir / "data"),
            agent_script=str(AGENT_SCRIPT),
            interpreter_script=str(INTERPRETER_SCRIPT),
            binds=self._binds,
            skills=str(sdir / "skills"),
            egress=str(sdir / "egress"),
            agent_pycache=self._pycache,
        )
        config = build_config(
            spec, paths, self._s.uid_base, self._cgroup(spec.sandbox_id), self._seccomp
        )
        return _write_bundle(sdir, json.dumps(config))

    async def destroy(self, sandbox_id: str) -> None:
        """Every step is attempted even if an earlier one failed; the first error is raised."""
        await self._forget(sandbox_id)
        errors: list[Exception] = []
        try:
            await self._destroy_cli.delete_force(sandbox_id)
        except RuntimeFailure as exc:
            errors.append(exc)
            await self._in_destroy_thread(self._kill_cgroup, sandbox_id)
        try:
            await self._in_destroy_thread(self._remove_cgroup, sandbox_id)
        except RuntimeFailure as exc:
            errors.append(exc)
        await self._finish_destroy(sandbox_id, errors)

    def _kill_cgroup(self, sandbox_id: str) -> None:
        """Fallback when the OCI runtime cannot delete: SIGKILL whatever is in the cgroup."""
        reader = self._layout.reader(self._cgroup(sandbox_id))
        for _ in range(50):
            pids = reader.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

    def _remove_cgroup(self, sandbox_id: str) -> None:
        reader = self._layout.reader(self._cgroup(sandbox_id))
        try:
            reader.remove()
        except CgroupError as exc:
            raise RuntimeFailure(f"cgroup of {sandbox_id} could not be removed: {exc}") from exc

    async def is_running(self, sandbox_id: str) -> bool:
        return await self._cli.state(sandbox_id) == "running"

    async def list_ids(self) -> list[str]:
        """Everything that looks like one of ours: runtime state, sandbox dirs, cgroups."""
        ids = set(await self._cli.list_ids())
        with contextlib.suppress(FileNotFoundError):
            ids.update(p.name for p in (self._s.state_dir / "sandboxes").iterdir())
        ids.update(await self._in_thread(children, self._layout, self._s.cgroup_parent))
        return sorted(ids)


def _write_bundle(sdir: Path, config: str) -> socket.socket:
    """Write config.json and bind the agent's listening socket (handed to runc as fd 3)."""
    (sdir / "config.json").write_text(config)
    sock_path = sdir / "agent.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(sock_path))
        sock_path.chmod(0o600)
        listener.listen(64)
    except OSError:
        listener.close()
        raise
    return listener


def _check_traversable(path: Path) -> None:
    """Sandboxes run as unprivileged host uids: every ancestor of the state dir must let
    "others" search it, or runc fails later with an obscure EACCES on the rootfs mount."""
    for ancestor in [path.resolve(), *path.resolve().parents]:
        if not ancestor.stat().st_mode & 0o001:
            raise RuntimeFailure(
                f"{ancestor} is not searchable by other users (mode "
                f"{ancestor.stat().st_mode & 0o7777:o}); sandboxes run as unprivileged uids "
                "and need o+x on every directory above the state dir"
            )
