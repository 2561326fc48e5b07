"""Supervision of the egress proxy process and the per-sandbox sockets it serves.

The daemon starts the proxy (`python -m proxy`) as an unprivileged user with its own memory
and file-descriptor limits, talks to it over a private SOCK_SEQPACKET control channel
(proxy/wire.py), health-checks it, and restarts it when it dies or stops answering. For
every sandbox whose policy allows egress, the daemon binds a fresh listening socket in the
sandbox's egress dir and hands it over; after a restart every sandbox is attached again,
so policies come back without recreating sandboxes. While the proxy is down the sockets
have no listener: sandboxes get connection errors, never an open path.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import pwd
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.config import Config, ProxyConfig, split_host_port
from daemon.metrics import Metrics
from daemon.tasks import TaskSupervisor
from proxy import ca, wire
from proxy.confdir import UnsafeConfdir
from proxy.options import Limits, ProxyOptions
from proxy.state import REASONS as EGRESS_REASONS
from sandbox.spec import EGRESS_SOCKET

logger = logging.getLogger(__name__)

SOCKET_NAME = Path(EGRESS_SOCKET).name
RPC_TIMEOUT_S = 5.0
START_TIMEOUT_S = 30.0
MAX_BACKOFF_S = 5.0
FAILED_PINGS = 3
SHARED_USERS = frozenset({"root", "nobody", "daemon", "nogroup"})
NOBODY = 65534


class EgressUnavailable(Exception):
    """The proxy did not take a sandbox's policy (it is down, or refused it)."""


@dataclass(frozen=True)
class ProxySettings:
    """How the daemon runs the proxy (its user, rlimits, health checks, log level) and the
    options it hands it. No default is stated here: the process's come from [proxy]
    (ProxyConfig), the options' from the proxy's own schema (proxy/options.py)."""

    state_dir: Path  # the proxy's own dir (CA, mitmproxy confdir): root's, its group reads
    user: str = ProxyConfig.user
    memory_bytes: int = ProxyConfig.memory_bytes
    nofile: int = ProxyConfig.nofile
    intercept_all: bool = ProxyOptions.intercept_all
    health_interval_s: float = ProxyConfig.health_interval_s
    hosts: Mapping[str, Sequence[str]] = field(default_factory=dict)
    allow_upstreams: tuple[tuple[str, int], ...] = ProxyOptions.allow_upstreams
    upstream_ca_bundle: str = ProxyOptions.upstream_ca_bundle
    limits: Limits = field(default_factory=Limits)
    log_level: str = Config.log_level

    @classmethod
    def from_config(cls, cfg: ProxyConfig, state_dir: Path, log_level: str) -> ProxySettings:
        """[proxy] as the daemon runs it (the config was validated when it was loaded)."""
        return cls(
            state_dir=state_dir,
            user=cfg.user,
            memory_bytes=cfg.memory_bytes,
            nofile=cfg.nofile,
            intercept_all=cfg.intercept == "all",
            health_interval_s=cfg.health_interval_s,
            hosts={k: [a.strip() for a in v.split(",")] for k, v in cfg.hosts.items()},
            allow_upstreams=tuple(split_host_port(pair) for pair in cfg.allow_upstreams),
            upstream_ca_bundle=cfg.upstream_ca_bundle,
            limits=cfg.limits(),
            log_level=log_level,
        )

    def options(self) -> ProxyOptions:
        """What the proxy process is told on its command line."""
        return ProxyOptions(
            confdir=str(self.state_dir),
            intercept_all=self.intercept_all,
            hosts={name: tuple(addresses) for name, addresses in self.hosts.items()},
            allow_upstreams=self.allow_upstreams,
            upstream_ca_bundle=self.upstream_ca_bundle,
            limits=self.limits,
        )


@dataclass(frozen=True)
class _Attachment:
    egress_dir: Path
    policy: dict[str, Any]
    secrets: list[dict[str, str]] = field(repr=False)


class EgressProxy:
    def __init__(self, settings: ProxySettings, metrics: Metrics, tasks: TaskSupervisor) -> None:
        self._s = settings
        self._metrics = metrics
        self._tasks = tasks
        self._rpc_thread = ThreadPoolExecutor(1, thread_name_prefix="proxy-rpc")
        self._attached: dict[str, _Attachment] = {}
        self._process: asyncio.subprocess.Process | None = None
        self._control: socket.socket | None = None
        self._ready = asyncio.Event()
        self._lock = asyncio.Lock()  # one (re)start or attach at a time
        self._rpc_id = 0
        self._last_stats: dict[str, Any] = {}
        self._closing = False
        self._owner: tuple[int, int] | None = None  # the proxy user's (uid, gid), from start()
        self.ca_cert: Path | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        owner = await loop.run_in_executor(self._rpc_thread, ensure_user, self._s.user)
        self._owner = owner
        try:
            self.ca_cert = await loop.run_in_executor(
                self._rpc_thread, ca.ensure_ca, self._s.state_dir, owner[1]
            )
        except UnsafeConfdir as exc:
            raise EgressUnavailable(str(exc)) from None
        async with self._lock:
            await self._spawn()
        self._tasks.spawn("egress-proxy", self._supervise())

    async def close(self) -> None:
        self._closing = True
        self._ready.clear()
        self._metrics.proxy_up.set(0)
        await self._stop_process()
        self._rpc_thread.shutdown(wait=False, cancel_futures=True)

    async def _spawn(self) -> None:
        assert self._owner is not None, "start() first"
        uid, gid = self._owner
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-m", "proxy",
                "--control-fd", str(theirs.fileno()),
                "--config", self._s.options().to_json(),
                "--log-level", self._s.log_level,
                # It drops to this user itself once its imports are done (the interpreter
                # may live where that user cannot read, e.g. under /root with pyenv).
                "--user", f"{uid}:{gid}",
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                cwd="/", env={"PATH": "/usr/bin:/bin", "HOME": str(self._s.state_dir)},
                start_new_session=True,
            )  # fmt: skip
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        for limit, value in (
            (resource.RLIMIT_NOFILE, self._s.nofile),
            (resource.RLIMIT_AS, self._s.memory_bytes),
        ):
            with contextlib.suppress(ProcessLookupError):
                resource.prlimit(process.pid, limit, (value, value))
        ours.settimeout(RPC_TIMEOUT_S)
        self._process, self._control = process, ours
        try:
            await self._wait_ready()
            for sandbox_id, attachment in list(self._attached.items()):
                await self._send_attach(sandbox_id, attachment)
        except BaseException:
            await self._stop_process()
            raise
        self._ready.set()
        self._metrics.proxy_up.set(1)
        logger.info(
            "egress proxy started",
            extra={"pid": process.pid, "sandboxes": len(self._attached)},
        )

    async def _wait_ready(self) -> None:
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
        while True:
            try:
                await self._rpc({"op": "ping"})
                return
            except EgressUnavailable:
                assert self._process is not None
                if self._process.returncode is not None:
                    raise
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def _stop_process(self) -> None:
        process, control = self._process, self._control
        self._process, self._control = None, None
        if control is not None:
            control.close()  # the proxy exits when its control channel closes
        if process is None:
            return
        try:
            await asyncio.wait_for(process.wait(), 3)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)
            await process.wait()

    async def _supervise(self) -> None:
        backoff = 0.2
        failures = 0
        while not self._closing:
            process = self._process
            if process is None or process.returncode is not None:
                self._ready.clear()
                self._metrics.proxy_up.set(0)
                if process is not None:
                    logger.error(
                        "egress proxy exited; restarting",
                        extra={"returncode": process.returncode},
                    )
                self._metrics.proxy_restarts.inc()
                async with self._lock:
                    await self._stop_process()
                    try:
                        await self._spawn()
                        backoff, failures = 0.2, 0
                    except (OSError, EgressUnavailable):
                        logger.exception("egress proxy restart failed")
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, MAX_BACKOFF_S)
                        continue
            wait = asyncio.ensure_future(self._process.wait()) if self._process else None
            try:
                if wait is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(wait), self._s.health_interval_s)
                if self._process is None or self._process.returncode is not None:
                    continue
                try:
                    reply = await self._rpc({"op": "ping"})
                    failures = 0
                    self._metrics.proxy_up.set(1)
                    self._count(reply.get("stats", {}))
                except EgressUnavailable:
                    failures += 1
                    if failures >= FAILED_PINGS and self._process is not None:
                        logger.error("egress proxy stopped answering; killing it")
                        with contextlib.suppress(ProcessLookupError):
                            self._process.send_signal(signal.SIGKILL)
            finally:
                if wait is not None and not wait.done():
                    wait.cancel()

    def _count(self, stats: Mapping[str, Any]) -> None:
        """Add what the proxy counted since the last ping (its counters restart with it)."""
        decisions = stats.get("decisions", {})
        previous = self._last_stats.get("decisions", {})
        if isinstance(decisions, dict):
            for reason, value in decisions.items():
                if not isinstance(value, int):
                    continue
                label = reason if reason in EGRESS_REASONS else "internal_error"
                before = previous.get(reason, 0)
                delta = value - before if value >= before else value
                if delta > 0:
                    self._metrics.egress_decisions.labels(label).inc(delta)
        subs, before_subs = stats.get("substitutions", 0), self._last_stats.get("substitutions", 0)
        if isinstance(subs, int):
            delta = subs - before_subs if subs >= before_subs else subs
            if delta > 0:
                self._metrics.egress_substitutions.inc(delta)
        self._last_stats = dict(stats)

    # ------------------------------------------------------------------ control RPC

    async def _rpc(self, message: dict[str, Any], fd: int | None = None) -> dict[str, Any]:
        control = self._control
        if control is None:
            raise EgressUnavailable("egress proxy is not running")
        self._rpc_id += 1
        message = {**message, "id": self._rpc_id}
        loop = asyncio.get_running_loop()
        try:
            reply = await loop.run_in_executor(self._rpc_thread, _call, control, message, fd)
        except (OSError, wire.WireError) as exc:
            raise EgressUnavailable(f"egress proxy control: {exc}") from None
        if "error" in reply:
            raise EgressUnavailable(f"egress proxy refused {message['op']}: {reply['error']}")
        return reply

    # ------------------------------------------------------------------ sandboxes

    async def attach(
        self,
        sandbox_id: str,
        egress_dir: Path,
        policy: dict[str, Any],
        secrets: list[dict[str, str]],
    ) -> None:
        """Serve the sandbox's egress socket with its policy; kept across proxy restarts."""
        attachment = _Attachment(egress_dir, policy, secrets)
        async with self._lock:
            self._attached[sandbox_id] = attachment
            try:
                await self._send_attach(sandbox_id, attachment)
            except BaseException:
                self._attached.pop(sandbox_id, None)
                with contextlib.suppress(OSError):
                    (egress_dir / SOCKET_NAME).unlink()
                raise

    async def detach(self, sandbox_id: str) -> None:
        async with self._lock:
            attachment = self._attached.pop(sandbox_id, None)
            if attachment is None:
                return
            with contextlib.suppress(OSError):
                (attachment.egress_dir / SOCKET_NAME).unlink()
            with contextlib.suppress(EgressUnavailable):
                await self._rpc({"op": "detach", "sandbox": sandbox_id})

    async def _send_attach(self, sandbox_id: str, attachment: _Attachment) -> None:
        loop = asyncio.get_running_loop()
        listener = await loop.run_in_executor(
            self._rpc_thread, _bind, attachment.egress_dir / SOCKET_NAME
        )
        try:
            await self._rpc(
                {
                    "op": "attach",
                    "sandbox": sandbox_id,
                    "policy": attachment.policy,
                    "secrets": attachment.secrets,
                },
                listener.fileno(),
            )
        finally:
            listener.close()  # the proxy holds its own copy; none stays here


def ensure_user(name: str) -> tuple[int, int]:
    """(uid, gid) of the proxy's own system user, created when missing (useradd). Never a
    shared account or group: whoever else ran as it, or was in its group, could read the CA
    key every sandbox trusts (the key is 0640 root:<that group>)."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        argv = [
            "useradd", "--system", "--user-group", "--no-create-home",
            "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
            "--comment", "sandboxd egress proxy", name,
        ]  # fmt: skip
        try:
            proc = subprocess.run(
                argv,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                capture_output=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise EgressUnavailable(f"user {name} is missing and useradd failed: {exc}") from exc
        try:
            entry = pwd.getpwnam(name)  # another daemon may have made it meanwhile
        except KeyError:
            detail = proc.stderr.decode(errors="replace").strip()[-200:]
            raise EgressUnavailable(
                f"user {name} is missing and could not be created ({detail}); "
                "create it (scripts/install does) or set [proxy] user"
            ) from None
        logger.info("created the egress proxy's user", extra={"user": name})
    refuse_shared(entry)
    return entry.pw_uid, entry.pw_gid


def refuse_shared(user: pwd.struct_passwd) -> None:
    """EgressUnavailable unless the proxy user and its primary group are its own: not a
    shared account, and no other account has the group or is in it."""
    if user.pw_uid == 0 or user.pw_name in SHARED_USERS or user.pw_uid == NOBODY:
        raise EgressUnavailable(
            f"[proxy] user {user.pw_name!r} is a shared account; use its own user"
        )
    try:
        group = grp.getgrgid(user.pw_gid)
    except KeyError:
        raise EgressUnavailable(
            f"[proxy] user {user.pw_name!r}: its group {user.pw_gid} does not exist"
        ) from None
    others = {m for m in group.gr_mem if m != user.pw_name}
    others.update(
        p.pw_name for p in pwd.getpwall() if p.pw_gid == user.pw_gid and p.pw_name != user.pw_name
    )
    if user.pw_gid in (0, NOBODY) or group.gr_name in SHARED_USERS or others:
        shared = f" with {', '.join(sorted(others)[:3])}" if others else ""
        raise EgressUnavailable(
            f"[proxy] user {user.pw_name!r}: its group {group.gr_name!r} is shared{shared}; "
            "give it a group of its own (useradd --user-group)"
        )


def _bind(path: Path) -> socket.socket:
    """A fresh listening socket at `path` (its directory is the sandbox's private egress dir)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Bound through the directory's fd: sun_path holds 107 bytes, a deep state dir more.
    dir_fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        listener.bind(f"/proc/self/fd/{dir_fd}/{path.name}")
        os.chmod(path, 0o666)  # noqa: S103 - the 0700 directory is what keeps others out
        listener.listen(512)
    except OSError:
        listener.close()
        raise
    finally:
        os.close(dir_fd)
    return listener


def _call(control: socket.socket, message: dict[str, Any], fd: int | None) -> dict[str, Any]:
    """One request and its reply (run on the single RPC thread; replies of requests that
    timed out earlier are skipped by id)."""
    wire.send(control, message, fd)
    while True:
        reply, stray = wire.recv(control)
        if stray is not None:
            os.close(stray)
        if reply.get("id") == message["id"]:
            return reply
