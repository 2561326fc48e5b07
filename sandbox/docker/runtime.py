"""The docker backend: sandboxes as Docker containers, driven through the SDK adapter.

Same contract as the oci backend, same agent, same per-sandbox host directory
(<state_dir>/sandboxes/<first id>/: workspace mount, skills, egress, the agent's socket dir,
passwd and group). Docker cannot hand the agent a listening socket, so the agent binds one in
a host directory (ctl/) bound at /.sandboxd/sock; once it answers, the daemon makes that
directory root's (0700) so sandbox code can neither reach nor replace the socket (see
agent.open_listener).

Without a user namespace (docker's userns-remap is engine-wide) the sandbox runs as a host
uid and gid of its own: the first id of its claimed range + 1000, named "sandbox" in its own
/etc/passwd and /etc/group. No other sandbox and no host account has it, and per-user kernel
counters (inotify instances, pending signals...) are charged to it alone. Containers carry the
daemon's instance label and live under `<cgroup_parent>/<instance>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox import images
from sandbox.agent_client import AgentLimits
from sandbox.docker.container import (
    LABEL_ID,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    create_args,
    etc_files,
)
from sandbox.docker.engine import Engine
from sandbox.errors import RuntimeFailure, SandboxError
from sandbox.host.agent import (
    AGENT_READY_TIMEOUT_S,
    AGENT_SCRIPT,
    INTERPRETER_SCRIPT,
    agent_env,
)
from sandbox.host.base import HostRuntime, SandboxHome, all_or_nothing
from sandbox.host.dirs import make_private_dir
from sandbox.host.mounts import HostPaths
from sandbox.host.roots import Root
from sandbox.host.roots import record as record_root
from sandbox.idranges import IdRangeSettings
from sandbox.spec import SandboxSpec

logger = logging.getLogger(__name__)

REPOSITORY = "sandboxd"
DEFAULT_ENGINE_URL = "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class DockerSettings:
    state_dir: Path
    engine_url: str = DEFAULT_ENGINE_URL
    default_image: str = "host"  # imported at start; a create names its own (spec.image)
    cgroup_parent: str = "/sandboxd-docker"  # containers' cgroups: <parent>/<instance>/<cid>
    agent_limits: AgentLimits = field(default_factory=AgentLimits)
    threads: int = 8
    timeout_s: float = 60.0
    instance: str = ""  # "" = derived from state_dir
    ids: IdRangeSettings = field(default_factory=IdRangeSettings)


class DockerRuntime(HostRuntime):
    name = "docker"

    def __init__(
        self, settings: DockerSettings, seccomp: Mapping[str, Any], engine: Engine | None = None
    ) -> None:
        # Host-side file work (mkfs, mount, rmtree) has its own threads, not the engine's.
        super().__init__(settings, "docker-host")
        self._s = settings
        self._seccomp = seccomp
        self._engine = engine or Engine(settings.engine_url, settings.threads, settings.timeout_s)
        self._cgroups: dict[str, str] = {}  # sandbox id -> its cgroup (<parent>/<container id>)
        self._imported: set[str] = set()  # image refs known to the engine
        self._importing: dict[str, asyncio.Lock] = {}
        self._unused: list[str] = []  # refs of builds no sandbox uses any more, to remove
        self._default_ref = ""
        self.cgroup_base = f"{settings.cgroup_parent}/{self.instance}"

    @property
    def image_ref(self) -> str:
        """The default image's engine reference (set by start)."""
        return self._default_ref

    async def start(self) -> None:
        version, driver = await self._engine.info()
        if driver != "cgroupfs":
            # With the systemd driver a container's group is a transient scope under a slice;
            # reading its OOM/pids counters from there is not implemented yet.
            raise RuntimeFailure(
                f"the docker backend needs an engine with the cgroupfs cgroup driver, this one "
                f"uses {driver!r} (dockerd --exec-opt native.cgroupdriver=cgroupfs)"
            )
        await self._start_host()
        await self._in_thread(_make_empty_file, self._s.state_dir / "docker-empty")
        await self._adopt_roots()
        self._default_ref = await self._engine_image(
            await self._prepare_image(self._s.default_image)
        )
        logger.info(
            "docker runtime ready",
            extra={
                "engine": version,
                "image": self._default_ref,
                "cgroup": self._layout.version.value,
            },
        )

    async def _engine_image(self, root: Root) -> str:
        """The engine's image of a root, imported from the tree the first time (once per
        engine and build: `sandboxd/<image>:<build>`; creates of that build wait for it)."""
        ref = _ref(root)
        if ref in self._imported:
            return ref
        async with self._importing.setdefault(ref, asyncio.Lock()):
            if ref in self._imported:
                return ref
            if not await self._engine.has_image(ref):
                tar = self._s.state_dir / "images" / f".import-{root.image}-{root.build_id}.tar"
                tar.parent.mkdir(parents=True, exist_ok=True)
                try:
                    await self._in_thread(images.write_tar, root.tree, tar)
                    await self._engine.import_image(
                        tar, f"{REPOSITORY}/{root.image}", root.build_id
                    )
                except OSError as exc:
                    raise RuntimeFailure(f"docker image {ref}: {exc}") from exc
                finally:
                    await self._in_thread(_unlink, tar)
                logger.info("docker image imported", extra={"image": ref})
            self._imported.add(ref)
        return ref

    async def create(self, spec: SandboxSpec) -> None:
        """All or nothing, even when cancelled: the steps finish in their own task (threads
        cannot be interrupted), then a cancelled create is undone."""
        assert self._default_ref, "start() first"
        await all_or_nothing(self._create(spec), lambda: self._destroy_quietly(spec.sandbox_id))

    async def _create(self, spec: SandboxSpec) -> None:
        sid = spec.sandbox_id
        try:
            root = await self._in_thread(self._roots.acquire, sid, spec.image)
            ref = await self._engine_image(root)
            home = await self._in_thread(self._make_home, spec)
            paths = await self._in_thread(self._docker_files, home, root)
            args = create_args(
                spec,
                ref,
                paths,
                self.cgroup_base,
                self.instance,
                self._seccomp,
                home.owner,
            )
            cid = await self._engine.run(sid, args)
            self._cgroups[sid] = f"{self.cgroup_base}/{cid}"
            await self.agent(sid).wait_ready(AGENT_READY_TIMEOUT_S)
            await self._in_thread(_seal, home.dir / "ctl")
            await self._confine(spec)
        except Exception as exc:
            await self._create_failed(sid, exc)
            raise

    def _docker_files(self, home: SandboxHome, root: Root) -> HostPaths:
        """The sandbox's root (recorded in its dir), the agent's socket dir (its user's
        until sealed) and its passwd and group files, then every host path of the container."""
        record_root(home.dir, root)
        make_private_dir(home.dir / "ctl", home.owner)
        passwd, group = etc_files(*home.owner)
        for name, text in (("passwd", passwd), ("group", group)):
            (home.dir / name).write_text(text)
            (home.dir / name).chmod(0o644)
        return HostPaths(
            workspace=str(home.dir / "data"),
            agent_script=str(AGENT_SCRIPT),
            interpreter_script=str(INTERPRETER_SCRIPT),
            agent_socket_dir=str(home.dir / "ctl"),
            skills=str(home.dir / "skills"),
            egress=str(home.dir / "egress"),
            binds=list(root.binds),
            agent_pycache=root.pycache,
            agent_env=agent_env(dict(root.env)),
            empty_file=str(self._s.state_dir / "docker-empty"),
            passwd=str(home.dir / "passwd"),
            group=str(home.dir / "group"),
        )

    async def destroy(self, sandbox_id: str) -> None:
        """Every step is attempted even if an earlier one failed; the first error is raised."""
        await self._forget(sandbox_id)
        errors: list[Exception] = []
        removed = False
        try:
            await self._engine.remove(sandbox_id)
            self._cgroups.pop(sandbox_id, None)
            removed = True
        except SandboxError as exc:
            errors.append(exc)
        await self._finish_destroy(sandbox_id, errors, processes_gone=removed)
        while self._unused:  # the engine's copy of a build that has just gone out of use
            ref = self._unused.pop()
            self._imported.discard(ref)
            if await self._engine.remove_image(ref):
                logger.info("docker image of an old build removed", extra={"image": ref})

    def _root_unused(self, root: Root) -> None:
        self._unused.append(_ref(root))

    async def is_running(self, sandbox_id: str) -> bool:
        state = await self._engine.state(sandbox_id)
        if state is None:
            return False
        self._cgroups[sandbox_id] = f"{state.cgroup_parent}/{state.container_id}"
        return state.running

    async def _find_agent_pid(self, sandbox_id: str) -> int | None:
        state = await self._engine.state(sandbox_id)
        return state.pid if state is not None and state.running and state.pid else None

    async def list_ids(self) -> list[str]:
        """Containers labelled as this instance's, and this daemon's own records."""
        labels = {LABEL_MANAGED: "1", LABEL_INSTANCE: self.instance}
        ids = {
            item[LABEL_ID] for item in await self._engine.list_labels(labels) if item.get(LABEL_ID)
        }
        return sorted(ids | await self._host_ids())

    def _agent_socket(self, sandbox_id: str) -> Path:
        return self._dir(sandbox_id) / "ctl" / "agent"

    async def _cgroup_of(self, sandbox_id: str) -> str | None:
        """<parent>/<container id>; the parent is read from the engine for a container this
        daemon did not start (after a restart, or made before instance scoping)."""
        path = self._cgroups.get(sandbox_id)
        if path is None:
            try:
                found = await self.is_running(sandbox_id)
            except SandboxError:
                return None
            path = self._cgroups.get(sandbox_id) if found else None
        return path

    async def close(self) -> None:
        await super().close()
        await self._engine.close()


def _make_empty_file(path: Path) -> None:
    path.write_bytes(b"")
    path.chmod(0o444)


def _seal(path: Path) -> None:
    """The agent listens: take its socket dir away from the sandbox's uid."""
    os.chown(path, 0, 0)
    path.chmod(0o700)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _ref(root: Root) -> str:
    return f"{REPOSITORY}/{root.image}:{root.build_id}"
