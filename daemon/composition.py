"""The composition root: builds every component, used by production and tests alike."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import grp
import logging
import os
import socket
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from aiohttp import web

from daemon.admission import Admission, AdmittingRuntime, host_memory_bytes
from daemon.api.app import create_app, create_metrics_app
from daemon.api.context import Services
from daemon.attach import AttachService
from daemon.code import CodeService
from daemon.config import Config, ProxyConfig, split_host_port
from daemon.container_egress import ContainerEgress
from daemon.container_files import ContainerFileService
from daemon.containers import ContainerService
from daemon.egress_proxy import EgressProxy, EgressUnavailable, ProxySettings
from daemon.exec import ExecService
from daemon.idempotency import Idempotency
from daemon.images import ImageService
from daemon.lifecycle import IdleReaper, read_boot_id, reconcile
from daemon.metrics import Metrics
from daemon.models import Status
from daemon.pool import WarmPool
from daemon.ports import PortService
from daemon.processes import ProcessService
from daemon.sandboxes import Sandboxes
from daemon.secretbox import SecretBoxError
from daemon.shutdown import ShutdownControl
from daemon.skills import SkillService
from daemon.store import Store, StoreUnavailable
from daemon.systemd import Notifier, SystemdEnv
from daemon.tasks import TaskSupervisor
from daemon.user_files import FileService
from daemon.workspace_files import WorkspaceFiles
from sandbox.errors import RuntimeFailure
from sandbox.oci.runtime import OciRuntime, OciSettings
from sandbox.runtime import Runtime
from sandbox.seccomp import SeccompProfileError, load_profile

if TYPE_CHECKING:
    from sandbox.docker.runtime import DockerRuntime

logger = logging.getLogger(__name__)


class StartupError(Exception):
    """The daemon cannot start (socket in use, runtime missing, ...)."""


class Daemon:
    """`async with Daemon(config) as d:` serves until the block exits, then shuts down."""

    def __init__(
        self,
        config: Config,
        socket_path: str,
        boot_id: str | None = None,
        systemd: SystemdEnv | None = None,
        backend: Runtime | None = None,
    ) -> None:
        """`backend` replaces the configured one (oci or docker): the in-process tests pass a
        double there, never instead of the runtime contract suite."""
        self.config = config
        self.socket_path = socket_path
        state = Path(config.state_dir)
        self.store = Store(state / "sandboxd.db")
        if backend is None:
            backend = self._make_runtime(config, state)
        try:
            host_memory = host_memory_bytes()
        except OSError as exc:
            raise StartupError(f"cannot read the host's memory size: {exc}") from exc
        self.admission = Admission(host_memory, config.containers.memory_overcommit)
        # Every sandbox, whoever makes it (API, pool, reconciler), passes admission control.
        self.runtime: Runtime = AdmittingRuntime(backend, self.admission)
        self.shutdown = ShutdownControl()
        self.metrics = Metrics(self.runtime.name)
        self.metrics.memory_committed.set_function(lambda: self.admission.committed)
        self.metrics.memory_capacity.set(self.admission.capacity)
        self.tasks = TaskSupervisor()
        self.files = FileService(config.files, self.store, state / "blobs")
        self.skills = SkillService(config.skills, self.store, state / "blobs")
        self.idempotency = Idempotency(config.idempotency, self.store)
        self.images = ImageService(state, config.runtime.default_image)
        proxy = None
        if config.proxy.enabled:
            settings = _proxy_settings(config.proxy, state / "proxy", config.log_level)
            proxy = EgressProxy(settings, self.metrics, self.tasks)
        self.egress = ContainerEgress(proxy, self.store, self.runtime, state)
        self.pool: WarmPool | None = None
        if any(config.pool.sizes.values()):
            self.pool = WarmPool(
                self.runtime,
                config.pool.slots(config.runtime.default_image),
                config.containers.limits(),
                self.metrics,
                self.admission,
                busy=lambda: self.containers.creating > 0,
                trust_bundle=lambda: self.egress.trust_bundle,
            )
        sandboxes = Sandboxes(self.runtime)
        workspace = WorkspaceFiles(config, self.store, sandboxes, self.files)
        self.containers = ContainerService(
            config,
            self.store,
            sandboxes,
            self.metrics,
            self.tasks,
            workspace=workspace,
            user_files=self.files,
            skills=self.skills,
            egress=self.egress,
            pool=self.pool,
            images=self.images,
        )
        processes = ProcessService(
            config, self.containers, sandboxes, self.tasks, self.shutdown, self.metrics
        )
        self.services = Services(
            containers=self.containers,
            container_files=ContainerFileService(
                self.containers, workspace, self.store, self.files
            ),
            exec=ExecService(config, self.containers, sandboxes, self.shutdown, self.metrics),
            code=CodeService(
                config, self.containers, self.store, sandboxes, self.shutdown, self.metrics
            ),
            processes=processes,
            attach=AttachService(config, self.containers, processes, self.shutdown, self.metrics),
            ports=PortService(
                config, self.containers, sandboxes, self.metrics, self.shutdown.stop_streams
            ),
            files=self.files,
            images=self.images,
            skills=self.skills,
            idempotency=self.idempotency,
            metrics=self.metrics,
        )
        self.boot_id = boot_id if boot_id is not None else read_boot_id()
        self._runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None
        self._lock_fd: int | None = None
        self._owns_socket_path = False
        self._systemd = systemd or SystemdEnv()
        self.notifier = Notifier(self._systemd.notify_socket, self._systemd.watchdog_usec)

    @staticmethod
    def _make_runtime(config: Config, state: Path) -> OciRuntime | DockerRuntime:
        rc = config.runtime
        try:
            seccomp = load_profile(Path(rc.seccomp_profile) if rc.seccomp_profile else None)
        except SeccompProfileError as exc:
            raise StartupError(str(exc)) from exc
        if rc.backend == "docker":
            # Imported only when used: the docker SDK costs ~0.2 s of every daemon start.
            from sandbox.docker.runtime import DEFAULT_ENGINE_URL, DockerRuntime, DockerSettings

            dc = config.docker
            docker = DockerSettings(
                state_dir=state,
                engine_url=dc.engine_url or DEFAULT_ENGINE_URL,
                default_image=rc.default_image,
                cgroup_parent=dc.cgroup_parent,
                threads=dc.threads,
                timeout_s=dc.timeout_s,
                instance=rc.instance,
                ids=rc.id_ranges(),
                agent_limits=config.agent.limits(),
            )
            return DockerRuntime(docker, seccomp)
        settings = OciSettings(
            state_dir=state,
            runtime_root=Path(rc.runtime_root),
            binary=rc.oci_binary,
            cgroup_parent=rc.cgroup_parent,
            default_image=rc.default_image,
            instance=rc.instance,
            ids=rc.id_ranges(),
            agent_limits=config.agent.limits(),
        )
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
        state = Path(self.config.state_dir)
        await asyncio.to_thread(state.mkdir, parents=True, exist_ok=True, mode=0o700)
        self._lock_fd = await asyncio.to_thread(_lock_state_dir, state)
        if self._systemd.listen_fds == 0 and await _socket_alive(Path(self.socket_path)):
            raise StartupError(f"another daemon is serving {self.socket_path}")
        try:
            await self.store.open()
        except StoreUnavailable as exc:
            raise StartupError(f"state database unusable, left as it is: {exc}") from exc
        # Everything that can be checked is, before any child process starts: the runtime
        # (binary, dirs, image) before the egress proxy.
        try:
            await self.runtime.start()
        except RuntimeFailure as exc:
            raise StartupError(str(exc)) from exc
        try:
            await self.egress.start()
        except (SecretBoxError, EgressUnavailable, OSError) as exc:
            raise StartupError(f"egress proxy: {exc}") from exc
        await reconcile(
            self.store, self.runtime, self.containers, self.egress, self.admission, self.boot_id
        )
        # Background processes outlive the daemon: watch the ones still running again.
        for rec in await self.store.containers.with_status((Status.RUNNING,)):
            self.tasks.spawn("process-adopt", self.services.processes.adopt(rec.id))
        interval = self.config.containers.reaper_interval_s
        reaper = IdleReaper(self.store, self.containers, self.metrics, interval)
        self.tasks.spawn("idle-reaper", reaper.run())
        await self.skills.start()
        await self.files.start()
        self.tasks.spawn("file-sweeper", self.files.run_sweeper())
        self.tasks.spawn("idempotency-sweeper", self.idempotency.run_sweeper())
        if self.pool is not None:
            self.tasks.spawn("warm-pool", self.pool.run())
        doc = resources.files("daemon").joinpath("openapi.json").read_bytes()
        app = create_app(self.config, self.services, doc, self.shutdown)
        self._runner = web.AppRunner(
            app,
            handle_signals=False,
            handler_cancellation=False,
            access_log=None,
            shutdown_timeout=self.config.server.cancel_timeout_s,
        )
        await self._runner.setup()
        await self._listen_unix(self._runner)
        if self.config.server.tcp:
            host, port = split_host_port(self.config.server.tcp)
            await web.TCPSite(self._runner, host, port).start()
        if self.config.metrics.listen:
            self._metrics_runner = web.AppRunner(
                create_metrics_app(self.services), handle_signals=False, access_log=None
            )
            await self._metrics_runner.setup()
            host, port = split_host_port(self.config.metrics.listen)
            await web.TCPSite(self._metrics_runner, host, port).start()
        self.tasks.spawn("systemd-watchdog", self.notifier.watchdog())
        self.notifier.notify("READY=1", "STATUS=serving")
        logger.info(
            "sandboxd serving",
            extra={"socket": self.socket_path, "tcp": self.config.server.tcp or None},
        )

    async def _listen_unix(self, runner: web.AppRunner) -> None:
        sock = self._systemd.activated_socket()  # socket activation: systemd owns the path
        if sock is None:
            sock = await asyncio.to_thread(self._bind_unix, Path(self.socket_path))
            self._owns_socket_path = True
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

    async def stop(self) -> None:
        """Staged, each stage bounded (see daemon/shutdown.py); sandboxes keep running."""
        server = self.config.server
        self.notifier.notify("STOPPING=1", "STATUS=stopping")
        if self._runner is not None:
            runner, self._runner = self._runner, None
            self.shutdown.draining = True
            self.shutdown.stop_streams.set()
            for site in list(runner.sites):
                await site.stop()  # stop accepting; keep-alive requests now get 503
            if not await self.shutdown.wait_idle(server.drain_timeout_s):
                logger.warning(
                    "stopping commands still running at shutdown",
                    extra={"in_flight": self.shutdown.in_flight},
                )
                self.shutdown.stop_commands.set()
                await self.shutdown.wait_idle(server.kill_grace_s)
            await runner.cleanup()  # cancels what is left after cancel_timeout_s
            if self._owns_socket_path:
                with contextlib.suppress(FileNotFoundError):
                    await asyncio.to_thread(Path(self.socket_path).unlink)
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
            self._metrics_runner = None
        self.containers.agent_watch.close()  # before the tasks: a death would spawn one
        await self.tasks.close(server.tasks_timeout_s)
        if self.pool is not None:
            await self.pool.drain()
        await self.egress.close()
        await self.runtime.close()
        await self.store.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        logger.info("sandboxd stopped")


def _proxy_settings(cfg: ProxyConfig, state: Path, log_level: str) -> ProxySettings:
    return ProxySettings.from_config(cfg, state, log_level)


def _lock_state_dir(state: Path) -> int:
    """One daemon per state dir: a second one would reconcile away the first one's sandboxes."""
    fd = os.open(state / "daemon.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StartupError(f"another sandboxd is using {state}") from None
    return fd


async def _socket_alive(path: Path) -> bool:
    try:
        _reader, writer = await asyncio.open_unix_connection(str(path))
    except OSError:
        return False
    writer.close()
    return True
