"""The docker SDK adapter: the one module that imports `docker`.

Every SDK call runs on this adapter's own bounded thread pool (the SDK is synchronous; it must
never run on the event loop or on the default executor), and every SDK or transport error is
translated here, once, into the sandbox layer's typed errors. Callers pass plain data (dicts,
lists, strings); no SDK type leaves this module.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

from sandbox.docker.container import ContainerArgs
from sandbox.errors import HostStorageFull, RuntimeFailure, SandboxGone

logger = logging.getLogger(__name__)

# dockerd 20.10 (Debian's docker.io) speaks API 1.41; newer engines still accept it.
API_VERSION = "1.41"
_TRANSPORT_ERRORS = (docker.errors.DockerException, requests.RequestException, OSError)


@dataclass(frozen=True)
class ContainerState:
    container_id: str
    running: bool
    status: str
    pid: int  # of its init on the host (0 when not running)
    cgroup_parent: str


def _translate(exc: BaseException, what: str) -> Exception:
    if isinstance(exc, docker.errors.NotFound):
        return SandboxGone(f"{what}: not found")
    detail = str(getattr(exc, "explanation", None) or exc)[-300:]
    if "no space left on device" in detail.lower():
        return HostStorageFull(f"{what}: {detail}")
    if isinstance(exc, docker.errors.APIError):
        return RuntimeFailure(f"{what}: docker engine refused: {detail}")
    return RuntimeFailure(f"{what}: docker engine unreachable or failed: {detail}")


class Engine:
    """A Docker engine at `url`, driven through the SDK on `threads` worker threads."""

    def __init__(self, url: str, threads: int, timeout_s: float) -> None:
        self._url = url
        self._timeout = timeout_s
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="docker")
        self._client: docker.DockerClient | None = None

    def _sdk(self) -> docker.DockerClient:
        # Only ever called on a pool thread; building a client does no I/O.
        if self._client is None:
            self._client = docker.DockerClient(
                base_url=self._url, version=API_VERSION, timeout=int(self._timeout)
            )
        return self._client

    async def _call[T](self, what: str, fn: Callable[[docker.DockerClient], T]) -> T:
        def run() -> T:
            try:
                return fn(self._sdk())
            except _TRANSPORT_ERRORS as exc:
                raise _translate(exc, what) from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    async def info(self) -> tuple[str, str]:
        """(engine version, cgroup driver)."""
        info: Mapping[str, Any] = await self._call("engine info", lambda c: c.info())
        return str(info.get("ServerVersion", "?")), str(info.get("CgroupDriver", "?"))

    async def has_image(self, ref: str) -> bool:
        try:
            await self._call(f"image {ref}", lambda c: c.api.inspect_image(ref))
        except SandboxGone:
            return False
        return True

    async def remove_image(self, ref: str) -> bool:
        """Remove an image no container uses; whether it went (absent or in use: no)."""

        def run(c: docker.DockerClient) -> bool:
            try:
                c.api.remove_image(ref)
            except (docker.errors.NotFound, docker.errors.APIError):
                return False  # gone already, or a container (even a stopped one) uses it
            return True

        return await self._call(f"image {ref}", run)

    async def import_image(self, tar_path: Path, repository: str, tag: str) -> None:
        def run(c: docker.DockerClient) -> None:
            reply = c.api.import_image_from_file(str(tar_path), repository=repository, tag=tag)
            if "error" in str(reply).lower():
                raise docker.errors.APIError(f"import failed: {str(reply)[-300:]}")

        await self._call(f"import {repository}:{tag}", run)

    async def run(self, name: str, args: ContainerArgs) -> str:
        """Create and start container `name`; return its full id."""

        def run(c: docker.DockerClient) -> str:
            host_config = c.api.create_host_config(**args.host)
            host_config.update(args.raw_host)
            try:
                reply = c.api.create_container(name=name, host_config=host_config, **args.create)
                c.api.start(reply["Id"])
            except docker.errors.NotFound as exc:  # the image (or the container, raced away)
                raise RuntimeFailure(f"container {name}: {exc}") from exc
            return str(reply["Id"])

        return await self._call(f"container {name}", run)

    async def state(self, name: str) -> ContainerState | None:
        def run(c: docker.DockerClient) -> ContainerState | None:
            try:
                info = c.api.inspect_container(name)
            except docker.errors.NotFound:
                return None
            st = info.get("State") or {}
            host = info.get("HostConfig") or {}
            return ContainerState(
                str(info["Id"]),
                bool(st.get("Running")),
                str(st.get("Status")),
                int(st.get("Pid") or 0),
                str(host.get("CgroupParent") or ""),
            )

        return await self._call(f"container {name}", run)

    async def remove(self, name: str) -> None:
        """Kill and remove container `name` (and its anonymous volumes); no error if absent."""

        def run(c: docker.DockerClient) -> None:
            try:
                c.api.remove_container(name, force=True, v=True)
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                # "removal already in progress" (a concurrent destroy): wait for it below.
                if exc.status_code != 409:
                    raise
            for _ in range(100):
                try:
                    c.api.inspect_container(name)
                except docker.errors.NotFound:
                    return
                time.sleep(0.05)
            raise RuntimeFailure(f"container {name} still exists after removal")

        await self._call(f"remove {name}", run)

    async def list_labels(self, labels: Mapping[str, str]) -> list[dict[str, str]]:
        """The labels of every container (any state) carrying all of `labels`."""
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}

        def run(c: docker.DockerClient) -> list[dict[str, str]]:
            found = c.api.containers(all=True, filters=filters)
            return [dict(item.get("Labels") or {}) for item in found]

        return await self._call("list containers", run)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, client.close)
        self._executor.shutdown(wait=False, cancel_futures=True)
