"""The docker backend: sandboxes as Docker containers, driven through the SDK adapter.

Same contract as the oci backend, same agent, same per-sandbox host directory
(<state_dir>/sandboxes/<id>/: workspace image and mount, skills, egress, the agent's socket
dir). Docker cannot hand the agent a listening socket, so the agent binds one in a host
directory (ctl/) bound at /.sandboxd/sock; once it answers, the daemon makes that directory root's
(0700) so sandbox code can neither reach nor replace the socket (see agent.open_listener).

Without a user namespace (docker's userns-remap is engine-wide) the sandbox's uid 1000 is
host uid 1000: a host account with that uid could read the sandbox's workspace and egress
dirs. Run sandboxd's docker backend on hosts where uid 1000 is not a login (README).
"""

from __future__ import annotations

import contextlib
import hashlib
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
    HostPaths,
    create_args,
)
from sandbox.docker.engine import Engine
from sandbox.errors import RuntimeFailure, SandboxError
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
from sandbox.spec import SANDBOX_GID, SANDBOX_UID, SandboxSpec

logger = logging.getLogger(__name__)

REPOSITORY = "sandboxd"
DEFAULT_ENGINE_URL = "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class DockerSettings:
    state_dir: Path
    engine_url: str = DEFAULT_ENGINE_URL
    image: str = ""  # "" = the host's /usr in a skeleton; else an image of `sandboxd image build`
    cgroup_parent: str = "/sandboxd-docker"
    agent_limits: AgentLimits = field(default_factory=AgentLimits)
    threads: int = 8
    timeout_s: float = 60.0


class DockerRuntime(HostRuntime):
    name = "docker"

    def __init__(
        self, settings: DockerSettings, seccomp: Mapping[str, Any], engine: Engine | None = None
    ) -> None:
        # Host-side file work (mkfs, mount, rmtree) has its own threads, not the engine's.
        super().__init__(settings.state_dir, settings.threads, "docker-host", settings.agent_limits)
        self._s = settings
        self._seccomp = seccomp
        self._engine = engine or Engine(settings.engine_url, settings.threads, settings.timeout_s)
        self._cids: dict[str, str] = {}  # sandbox id -> container id (names its cgroup)
        self._image_ref = ""
        self._binds: list[tuple[str, str]] = []
        self._instance = instance_of(settings.state_dir)

    @property
    def image_ref(self) -> str:
        return self._image_ref

    async def start(self) -> None:
        version, driver = await self._engine.info()
        if driver != "cgroupfs":
            # With the systemd driver a container's group is a transient scope under a slice;
            # reading its OOM/pids counters from there is not implemented yet.
            raise RuntimeFailure(
                f"the docker backend needs an engine with the cgroupfs cgroup driver, this one "
                f"uses {driver!r} (dockerd --exec-opt native.cgroupdriver=cgroupfs)"
            )
        self._make_state_dirs()
        await self._in_thread(_make_empty_file, self._s.state_dir / "docker-empty")
        try:
            root, repo, tag, binds = await self._in_thread(self._resolve_image)
        except (images.ImageError, OSError) as exc:
            raise RuntimeFailure(f"docker image: {exc}") from exc
        ref = f"{REPOSITORY}/{repo}:{tag}"
        if not await self._engine.has_image(ref):
            tar = self._s.state_dir / "images" / f".import-{repo}-{tag}.tar"
            tar.parent.mkdir(parents=True, exist_ok=True)
            try:
                await self._in_thread(images.write_tar, root, tar)
                await self._engine.import_image(tar, f"{REPOSITORY}/{repo}", tag)
            finally:
                await self._in_thread(_unlink, tar)
            logger.info("docker image imported", extra={"image": ref})
        self._image_ref = ref
        self._binds = binds
        await self._compile_agent(root)
        logger.info(
            "docker runtime ready",
            extra={"engine": version, "image": ref, "cgroup": self._layout.version.value},
        )

    def _resolve_image(self) -> tuple[Path, str, str, list[tuple[str, str]]]:
        if not self._s.image:
            skeleton = rootfs.ensure_skeleton(self._s.state_dir / "rootfs")
            return skeleton, "host", skeleton.name.removeprefix("rootfs-"), rootfs.host_binds()
        built = images.load(self._s.state_dir, self._s.image)
        return built.rootfs, built.name, built.build_id, []

    def _cgroup(self, container_id: str) -> str:
        return f"{self._s.cgroup_parent}/{container_id}"

    async def create(self, spec: SandboxSpec) -> None:
        """All or nothing, even when cancelled: the steps finish in their own task (threads
        cannot be interrupted), then a cancelled create is undone."""
        assert self._image_ref, "start() first"
        await all_or_nothing(self._create(spec), lambda: self._destroy_quietly(spec.sandbox_id))

    async def _create(self, spec: SandboxSpec) -> None:
        sid = spec.sandbox_id
        sdir = self._dir(sid)
        owner = (SANDBOX_UID, SANDBOX_GID)
        try:
            await self._in_thread(make_sandbox_dir, sdir)
            await self._in_thread(skills.make_dir, sdir / "skills")
            await self._in_thread(make_private_dir, sdir / "egress", owner)
            await self._in_thread(make_private_dir, sdir / "ctl", owner)
            await self._in_thread(
                self._workspaces.create,
                sdir / "workspace.img",
                sdir / "data",
                spec.limits.workspace_bytes,
                owner,
            )
            paths = HostPaths(
                workspace=str(sdir / "data"),
                agent_script=str(AGENT_SCRIPT),
                interpreter_script=str(INTERPRETER_SCRIPT),
                agent_socket_dir=str(sdir / "ctl"),
                skills=str(sdir / "skills"),
                egress=str(sdir / "egress"),
                binds=self._binds,
                agent_pycache=self._pycache,
                empty_file=str(self._s.state_dir / "docker-empty"),
            )
            args = create_args(
                spec, self._image_ref, paths, self._s.cgroup_parent, self._instance, self._seccomp
            )
            self._cids[sid] = await self._engine.run(sid, args)
            await self.agent(sid).wait_ready(AGENT_READY_TIMEOUT_S)
            await self._in_thread(_seal, sdir / "ctl")
        except Exception as exc:
            await self._create_failed(sid, exc)
            raise

    async def destroy(self, sandbox_id: str) -> None:
        """Every step is attempted even if an earlier one failed; the first error is raised."""
        await self._forget(sandbox_id)
        errors: list[Exception] = []
        try:
            await self._engine.remove(sandbox_id)
            self._cids.pop(sandbox_id, None)
        except SandboxError as exc:
            errors.append(exc)
        await self._finish_destroy(sandbox_id, errors)

    async def is_running(self, sandbox_id: str) -> bool:
        state = await self._engine.state(sandbox_id)
        if state is None:
            return False
        self._cids[sandbox_id] = state.container_id
        return state.running

    async def list_ids(self) -> list[str]:
        """Containers labelled as this daemon's, and every per-sandbox dir on the host."""
        labels = {LABEL_MANAGED: "1", LABEL_INSTANCE: self._instance}
        ids = {
            item[LABEL_ID] for item in await self._engine.list_labels(labels) if item.get(LABEL_ID)
        }
        with contextlib.suppress(FileNotFoundError):
            ids.update(p.name for p in (self._s.state_dir / "sandboxes").iterdir())
        return sorted(ids)

    def _agent_socket(self, sandbox_id: str) -> Path:
        return self._dir(sandbox_id) / "ctl" / "agent"

    async def _container_id(self, sandbox_id: str) -> str | None:
        cid = self._cids.get(sandbox_id)
        if cid is None:
            try:
                state = await self._engine.state(sandbox_id)
            except SandboxError:
                return None
            if state is None:
                return None
            cid = self._cids[sandbox_id] = state.container_id
        return cid

    async def _cgroup_of(self, sandbox_id: str) -> str | None:
        cid = await self._container_id(sandbox_id)
        return None if cid is None else self._cgroup(cid)

    async def close(self) -> None:
        await super().close()
        await self._engine.close()


def instance_of(state_dir: Path) -> str:
    """The `sandboxd.instance` label of a daemon's containers: two daemons (or test runs)
    sharing an engine never reconcile each other's sandboxes away."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:16]


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
