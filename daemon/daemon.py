"""The composition root: builds every component, used by production and tests alike."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import socket
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Self

from aiohttp import web

from daemon.api.app import create_app
from daemon.config import Config
from daemon.models import Status
from daemon.service import ContainerService
from daemon.store import Store
from sandbox.errors import RuntimeFailure
from sandbox.oci.runtime import OciRuntime, OciSettings
from sandbox.runtime import Runtime
from sandbox.seccomp import SeccompProfileError, load_profile

logger = logging.getLogger(__name__)


class StartupError(Exception):
    """The daemon cannot start (socket in use, runtime missing, ...)."""


class Daemon:
    """`async with Daemon(config) as d:` serves until the block exits, then shuts down."""

    def __init__(self, config: Config, socket_path: str) -> None:
        self.config = config
        self.socket_path = socket_path
        state = Path(config.state_dir)
        self.store = Store(state / "sandboxd.db")
        self.runtime: Runtime = self._make_runtime(config, state)
        self.service = ContainerService(config, self.store, self.runtime)
        self._runner: web.AppRunner | None = None

    @staticmethod
    def _make_runtime(config: Config, state: Path) -> OciRuntime:
        rc = config.runtime
        settings = OciSettings(
            state_dir=state,
            runtime_root=Path(rc.runtime_root),
            binary=rc.oci_binary,
            uid_base=rc.uid_base,
            cgroup_parent=rc.cgroup_parent,
        )
        try:
            seccomp = load_profile(Path(rc.seccomp_profile) if rc.seccomp_profile else None)
        except SeccompProfileError as exc:
            raise StartupError(str(exc)) from exc
        return OciRuntime(settings, seccomp)

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        await asyncio.to_thread(
            Path(self.config.state_dir).mkdir, parents=True, exist_ok=True, mode=0o711
        )
        await self.store.open()
        assert isinstance(self.runtime, OciRuntime)
        try:
            await self.runtime.start()
        except RuntimeFailure as exc:
            raise StartupError(str(exc)) from exc
        await self.reconcile()
        doc = resources.files("daemon").joinpath("openapi.json").read_bytes()
        app = create_app(self.config, self.service, doc)
        self._runner = web.AppRunner(
            app,
            handle_signals=False,
            handler_cancellation=False,
            access_log=None,
            shutdown_timeout=self.config.server.shutdown_timeout_s,
        )
        await self._runner.setup()
        await self._listen_unix(self._runner)
        if self.config.server.tcp:
            host, _, port = self.config.server.tcp.rpartition(":")
            site = web.TCPSite(self._runner, host.strip("[]") or "127.0.0.1", int(port))
            await site.start()
        logger.info(
            "sandboxd serving",
            extra={"socket": self.socket_path, "tcp": self.config.server.tcp or None},
        )

    async def _listen_unix(self, runner: web.AppRunner) -> None:
        path = Path(self.socket_path)
        if await _socket_alive(path):
            raise StartupError(f"another daemon is serving {path}")
        sock = await asyncio.to_thread(self._bind_unix, path)
        site = web.SockSite(runner, sock)
        await site.start()

    def _bind_unix(self, path: Path) -> socket.socket:
        server = self.config.server
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # stale: nothing answered on it
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            os.chmod(path, server.socket_mode)
            if server.socket_group:
                os.chown(path, -1, grp.getgrnam(server.socket_group).gr_gid)
        except (OSError, KeyError) as exc:
            sock.close()
            raise StartupError(f"cannot listen on {path}: {exc}") from exc
        return sock

    async def reconcile(self) -> None:
        """Make records and sandboxes agree before serving (both directions)."""
        for rec in await self.store.containers_with_status((Status.CREATING, Status.DELETING)):
            await self.runtime.destroy(rec.id)
            await self.store.delete_container(rec.id)
            logger.info("reconcile: removed unfinished container", extra={"container_id": rec.id})
        running = {r.id for r in await self.store.containers_with_status((Status.RUNNING,))}
        for cid in running:
            if not await self.runtime.is_running(cid):
                await self.runtime.destroy(cid)
                await self.store.set_status(cid, Status.EXPIRED, "sandbox gone at daemon start")
                logger.info("reconcile: sandbox gone, expired", extra={"container_id": cid})
        for sid in await self.runtime.list_ids():
            if sid not in running:
                await self.runtime.destroy(sid)
                logger.info("reconcile: destroyed orphan sandbox", extra={"container_id": sid})

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(Path(self.socket_path).unlink)
        await self.runtime.close()
        await self.store.close()
        logger.info("sandboxd stopped")


async def _socket_alive(path: Path) -> bool:
    try:
        _reader, writer = await asyncio.open_unix_connection(str(path))
    except OSError:
        return False
    writer.close()
    return True
