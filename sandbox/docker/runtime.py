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

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox import images
from sandbox.agent_client import AgentClient
from sandbox.cgroups import CgroupCounters, CgroupError, CgroupLayout, CgroupReader, KillCounters
from sandbox.docker.container import (
    LABEL_ID,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    HostPaths,
    create_args,
)
from sandbox.docker.engine import Engine
from sandbox.errors import HostStorageFull, RuntimeFailure, SandboxError
from sandbox.hostdirs import (
    AGENT_READY_TIMEOUT_S,
    AGENT_SCRIPT,
    INTERPRETER_SCRIPT,
    agent_pycache,
    all_or_nothing,
    disk_full,
    make_private_dir,
    make_sandbox_dir,
    remove_sandbox_dir,
    sandbox_dir,
)
from sandbox.oci import rootfs, skills, workspace
from sandbox.skill_archive import SkillArchiveError
from sandbox.spec import SANDBOX_GID, SANDBOX_UID, SandboxSpec, SkillFiles

logger = logging.getLogger(__name__)

REPOSITORY = "sandboxd"
DEFAULT_ENGINE_URL = "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class DockerSettings:
    state_dir: Path
    engine_url: str = DEFAULT_ENGINE_URL
    image: str = ""  # "" = the host's /usr in a skeleton; else an image of `sandboxd image build`
    cgroup_parent: str = "/sandboxd-docker"
    agent_connections: int = 16
    threads: int = 8
    timeout_s: float = 60.0


class DockerRuntime:
    name = "docker"

    def __init__(
        self, settings: DockerSettings, seccomp: Mapping[str, Any], engine: Engine | None = None
    ) -> None:
        self._s = settings
        self._seccomp = seccomp
        self._engine = engine or Engine(settings.engine_url, settings.threads, settings.timeout_s)
        # Host-side file work (mkfs, mount, rmtree) stays off the engine's threads.
        self._executor = ThreadPoolExecutor(settings.threads, thread_name_prefix="docker-host")
        self._layout = CgroupLayout.detect()
        self._agents: dict[str, AgentClient] = {}
        self._cids: dict[str, str] = {}  # sandbox id -> container id (names its cgroup)
        self._readers: dict[str, CgroupReader] = {}  # for kill_counters, on every exec
        self._image_ref = ""
        self._binds: list[tuple[str, str]] = []
        self._pycache = ""
        self._instance = instance_of(settings.state_dir)
        self._workspaces = workspace.Workspaces(settings.state_dir / "templates")

    @property
    def image_ref(self) -> str:
        return self._image_ref

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def start(self) -> None:
        version, driver = await self._engine.info()
        if driver != "cgroupfs":
            # With the systemd driver a container's group is a transient scope under a slice;
            # reading its OOM/pids counters from there is not implemented yet.
            raise RuntimeFailure(
                f"the docker backend needs an engine with the cgroupfs cgroup driver, this one "
                f"uses {driver!r} (dockerd --exec-opt native.cgroupdriver=cgroupfs)"
            )
        for path in (self._s.state_dir, self._s.state_dir / "sandboxes"):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o711)
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
        self._pycache = await self._in_thread(agent_pycache, self._s.state_dir, root)
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

    def _dir(self, sandbox_id: str) -> Path:
        return sandbox_dir(self._s.state_dir, sandbox_id)

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
            await self._destroy_quietly(sid)
            if disk_full(exc):
                raise HostStorageFull(f"no space left for sandbox {sid}") from exc
            raise

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

    async def destroy(self, sandbox_id: str) -> None:
        """Every step is attempted even if an earlier one failed; the first error is raised."""
        sdir = self._dir(sandbox_id)
        self._readers.pop(sandbox_id, None)
        agent = self._agents.pop(sandbox_id, None)
        if agent is not None:
            await agent.close()
        errors: list[Exception] = []
        try:
            await self._engine.remove(sandbox_id)
            self._cids.pop(sandbox_id, None)
        except SandboxError as exc:
            errors.append(exc)
        for step, args in (
            (workspace.destroy, (sdir / "workspace.img", sdir / "data")),
            (remove_sandbox_dir, (sdir,)),
        ):
            try:
                await self._in_thread(step, *args)
            except (RuntimeFailure, OSError) as exc:
                errors.append(exc)
        if errors:
            raise RuntimeFailure(f"destroy of {sandbox_id} incomplete: {errors[0]}") from errors[0]

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

    def egress_dir(self, sandbox_id: str) -> Path:
        return self._dir(sandbox_id) / "egress"

    def agent(self, sandbox_id: str) -> AgentClient:
        agent = self._agents.get(sandbox_id)
        if agent is None:
            sock = self._dir(sandbox_id) / "ctl" / "agent"
            agent = AgentClient(sock, self._s.agent_connections)
            self._agents[sandbox_id] = agent
        return agent

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

    async def counters(self, sandbox_id: str) -> CgroupCounters | None:
        cid = await self._container_id(sandbox_id)
        if cid is None:
            return None
        reader = self._layout.reader(self._cgroup(cid))
        try:
            counters: CgroupCounters = await self._in_thread(reader.counters)
        except CgroupError:
            return None
        return counters

    async def kill_counters(self, sandbox_id: str) -> KillCounters | None:
        # Kernel pseudo-file reads (microseconds) on the loop, as on the oci backend.
        reader = self._readers.get(sandbox_id)
        if reader is None:
            cid = await self._container_id(sandbox_id)
            if cid is None:
                return None
            reader = self._readers[sandbox_id] = self._layout.reader(self._cgroup(cid))
        try:
            return reader.kill_counters()
        except CgroupError:
            return None

    async def close(self) -> None:
        for agent in self._agents.values():
            await agent.close()
        self._agents.clear()
        await self._engine.close()
        self._executor.shutdown(wait=False, cancel_futures=True)


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
