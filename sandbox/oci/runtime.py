"""The embedded backend: OCI bundles run by runc (or crun), no container engine."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import socket
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.agent_client import AgentClient
from sandbox.cgroups import CgroupCounters, CgroupError, CgroupLayout
from sandbox.errors import RuntimeFailure
from sandbox.oci import rootfs, workspace
from sandbox.oci.bundle import BundlePaths, build_config
from sandbox.oci.runc import OciCli
from sandbox.spec import SANDBOX_GID, SANDBOX_UID, SandboxSpec

logger = logging.getLogger(__name__)

AGENT_SCRIPT = Path(__file__).resolve().parent.parent / "agent" / "agent.py"
AGENT_READY_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class OciSettings:
    state_dir: Path  # sandboxes/<id>/ and the rootfs skeleton live here
    runtime_root: Path  # the OCI runtime's own state (tmpfs: gone after a reboot)
    binary: str = "runc"
    uid_base: int = 100_000
    cgroup_parent: str = "/sandboxd"
    agent_connections: int = 16
    threads: int = 8


class OciRuntime:
    name = "oci"

    def __init__(self, settings: OciSettings, seccomp: Mapping[str, Any]) -> None:
        self._s = settings
        self._seccomp = seccomp
        self._executor = ThreadPoolExecutor(settings.threads, thread_name_prefix="oci")
        self._cli = OciCli(settings.binary, settings.runtime_root, self._executor)
        self._layout = CgroupLayout.detect()
        self._agents: dict[str, AgentClient] = {}
        self._rootfs: Path | None = None
        self._binds: list[tuple[str, str]] = []

    @property
    def cgroup_layout(self) -> CgroupLayout:
        return self._layout

    async def _in_thread[T](self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def start(self) -> None:
        self._s.runtime_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        # The sandbox's mapped root must traverse (not list) the way to its rootfs and binds.
        for path in (self._s.state_dir, self._s.state_dir / "sandboxes"):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o711)
        self._rootfs = await self._in_thread(rootfs.ensure_skeleton, self._s.state_dir / "rootfs")
        self._binds = rootfs.host_binds()
        logger.info(
            "oci runtime ready",
            extra={"binary": self._s.binary, "cgroup": self._layout.version.value},
        )

    def _dir(self, sandbox_id: str) -> Path:
        if "/" in sandbox_id or sandbox_id in ("", ".", ".."):
            raise ValueError("bad sandbox id")
        return self._s.state_dir / "sandboxes" / sandbox_id

    def _cgroup(self, sandbox_id: str) -> str:
        return f"{self._s.cgroup_parent}/{sandbox_id}"

    async def create(self, spec: SandboxSpec) -> None:
        assert self._rootfs is not None, "start() first"
        sid = spec.sandbox_id
        sdir = self._dir(sid)
        try:
            sdir.mkdir()
            sdir.chmod(0o711)
            owner = (self._s.uid_base + SANDBOX_UID, self._s.uid_base + SANDBOX_GID)
            await self._in_thread(
                workspace.create,
                sdir / "workspace.img",
                sdir / "data",
                spec.limits.workspace_bytes,
                owner,
            )
            paths = BundlePaths(
                rootfs=str(self._rootfs),
                workspace=str(sdir / "data"),
                agent_script=str(AGENT_SCRIPT),
                binds=self._binds,
            )
            config = build_config(spec, paths, self._s.uid_base, self._cgroup(sid), self._seccomp)
            (sdir / "config.json").write_text(json.dumps(config))
            sock_path = sdir / "agent.sock"
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
                listener.bind(str(sock_path))
                sock_path.chmod(0o600)
                listener.listen(64)
                await self._cli.run_detached(sid, sdir, listener.fileno())
            agent = self.agent(sid)
            await agent.wait_ready(AGENT_READY_TIMEOUT_S)
        except BaseException:
            await asyncio.shield(self._destroy_quietly(sid))
            raise

    async def _destroy_quietly(self, sandbox_id: str) -> None:
        try:
            await self.destroy(sandbox_id)
        except Exception:
            logger.exception(
                "cleanup of a failed create failed", extra={"container_id": sandbox_id}
            )

    async def destroy(self, sandbox_id: str) -> None:
        sdir = self._dir(sandbox_id)
        agent = self._agents.pop(sandbox_id, None)
        if agent is not None:
            await agent.close()
        await self._cli.delete_force(sandbox_id)
        await self._in_thread(workspace.destroy, sdir / "workspace.img", sdir / "data")
        await self._in_thread(self._remove_cgroup, sandbox_id)
        await self._in_thread(shutil.rmtree, sdir, True)

    def _remove_cgroup(self, sandbox_id: str) -> None:
        reader = self._layout.reader(self._cgroup(sandbox_id))
        try:
            reader.remove()
        except CgroupError as exc:
            raise RuntimeFailure(f"cgroup of {sandbox_id} could not be removed: {exc}") from exc

    async def is_running(self, sandbox_id: str) -> bool:
        return await self._cli.state(sandbox_id) == "running"

    async def list_ids(self) -> list[str]:
        ids = set(await self._cli.list_ids())
        with contextlib.suppress(FileNotFoundError):
            ids.update(p.name for p in (self._s.state_dir / "sandboxes").iterdir())
        return sorted(ids)

    def agent(self, sandbox_id: str) -> AgentClient:
        agent = self._agents.get(sandbox_id)
        if agent is None:
            agent = AgentClient(self._dir(sandbox_id) / "agent.sock", self._s.agent_connections)
            self._agents[sandbox_id] = agent
        return agent

    async def counters(self, sandbox_id: str) -> CgroupCounters | None:
        reader = self._layout.reader(self._cgroup(sandbox_id))
        try:
            counters: CgroupCounters = await self._in_thread(reader.counters)
        except CgroupError:
            return None
        return counters

    async def close(self) -> None:
        for agent in self._agents.values():
            await agent.close()
        self._agents.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
