"""The egress proxy process: `python -m proxy --control-fd N --config JSON`.

Started by the daemon as an unprivileged user. mitmproxy runs with no listener of its own
(`server = false`): connections arrive only through the per-sandbox unix sockets the daemon
hands over on the control channel (front.py). Only the addons the proxy needs are loaded:
no onboarding app, no web UI, no scripts, no flow storage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from mitmproxy import certs, options
from mitmproxy.addons import core, disable_h2c, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master
from mitmproxy.proxy.mode_servers import ServerInstance

from proxy import ca, confdir, wire
from proxy.addon import EgressAddon
from proxy.body_limit import install_body_limits
from proxy.control import Attach, Detach, Ping
from proxy.control import parse as parse_request
from proxy.front import Front
from proxy.head_limit import install_head_limit
from proxy.options import OptionsError, ProxyOptions
from proxy.resolver import Resolver
from proxy.secrets import SecretSet
from proxy.state import Registry, Sandbox
from sandbox.policy import parse_network_policy

logger = logging.getLogger("proxy")


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in (
            "container_id",
            "decision",
            "reason",
            "host",
            "port",
            "sni",
            "secret",
            "secrets",
        ):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"), default=str)


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # mitmproxy's own chatter (per-connection info lines) stays out of the journal.
    logging.getLogger("mitmproxy").setLevel(logging.WARNING)


class ProxyProcess:
    def __init__(self, control: socket.socket, options: ProxyOptions) -> None:
        self._control = control
        self._options = options
        self._limits = options.limits
        self._registry = Registry()
        self._front = Front(self._registry, self._limits)
        self._intercept_all = options.intercept_all
        self._resolver = Resolver(
            hosts=options.hosts, allow_upstreams=frozenset(options.allow_upstreams)
        )
        self._addon = EgressAddon(self._registry, self._resolver, self._limits)
        self._closed = asyncio.Event()
        self._tasks: set[asyncio.Future[None]] = set()

    def _mitmproxy_options(self, upstream_bundle: bool) -> dict[str, Any]:
        """mitmproxy's options. The confdir is this process's working directory, named "."
        (run() enters it while still root): mitmproxy reads its CA again after the privilege
        drop, and the proxy user may not traverse the daemon's private state dir above it."""
        opts: dict[str, Any] = {
            "server": False,
            "confdir": ".",
            "connection_strategy": "lazy",
            "upstream_cert": False,
            "ssl_insecure": False,
            "http2": True,
            "websocket": True,
            "rawtcp": False,
            "tcp_timeout": int(self._limits.idle_timeout_s),
        }
        if upstream_bundle:
            opts["ssl_verify_upstream_trusted_ca"] = f"./{ca.UPSTREAM_BUNDLE}"
        return opts

    def _enter_confdir(self, gid: int) -> bool:
        """While still root: enter the confdir (root's, made by the daemon, never through a
        link) and write there the files mitmproxy reads that the daemon cannot make (it does
        not import mitmproxy): the DH parameters, which from_files() would otherwise create
        after the privilege drop in a directory the proxy may not write, and the diagnostics
        CA bundle (certifi's plus `upstream_ca_bundle`). True when there is a bundle."""
        files = {ca.DHPARAM_FILE: certs.DEFAULT_DHPARAM}
        extra = self._options.upstream_ca_bundle
        if extra:
            import certifi

            bundle = Path(certifi.where()).read_bytes() + b"\n" + Path(extra).read_bytes()
            files[ca.UPSTREAM_BUNDLE] = bundle
        confdir.enter(self._options.confdir, files, ca.PUBLIC_MODE, gid)
        return bool(extra)

    async def run(self, user: tuple[int, int]) -> None:
        upstream_bundle = self._enter_confdir(user[1])  # see _mitmproxy_options
        master = Master(options.Options(), with_termlog=False)
        server = proxyserver.Proxyserver()  # type: ignore[no-untyped-call]
        addons: list[Any] = [
            core.Core(),
            server,
            next_layer.NextLayer(),
            tlsconfig.TlsConfig(),
            disable_h2c.DisableH2C(),
            self._addon,
        ]
        master.addons.add(*addons)  # type: ignore[no-untyped-call]
        master.options.update(**self._mitmproxy_options(upstream_bundle))  # type: ignore[no-untyped-call]
        install_head_limit(self._limits.max_head_bytes)
        install_body_limits(self._limits, self._addon)
        self._front.set_handler(ServerInstance.make("regular", server))
        drop_privileges(*user)  # before the first byte from the daemon or a sandbox is read
        _check_confdir()
        loop = asyncio.get_running_loop()
        self._resolver.install(loop)
        self._control.setblocking(False)
        loop.add_reader(self._control.fileno(), self._on_control)
        runner = asyncio.ensure_future(master.run())
        logger.info("egress proxy ready")
        try:
            await self._closed.wait()
        finally:
            loop.remove_reader(self._control.fileno())
            master.shutdown()  # type: ignore[no-untyped-call]
            with contextlib.suppress(Exception):
                await asyncio.wait_for(runner, 5)

    def _on_control(self) -> None:
        try:
            message, fd = wire.recv(self._control)
        except BlockingIOError:
            return
        except (OSError, wire.WireError) as exc:
            logger.info("control channel closed; exiting", extra={"reason": str(exc)})
            self._closed.set()
            return
        task = asyncio.ensure_future(self._handle(message, fd))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, message: dict[str, Any], fd: int | None) -> None:
        reply: dict[str, Any] = {"id": message.get("id")}
        try:
            reply.update(await self._dispatch(message, fd))
            reply["ok"] = True
        except Exception as exc:  # noqa: BLE001 - any failure becomes the reply's error
            if fd is not None:
                with contextlib.suppress(OSError):
                    socket.close(fd)
            reply["error"] = f"{type(exc).__name__}: {exc}"
        try:
            wire.send(self._control, reply)
        except OSError:
            self._closed.set()

    async def _dispatch(self, message: dict[str, Any], fd: int | None) -> dict[str, Any]:
        # Validated whole before anything is touched: a refused attach leaves the sandbox's
        # current egress as it was.
        op = parse_request(message, fd)
        match op:
            case Ping():
                return {"stats": self._registry.stats()}
            case Detach(sandbox_id):
                await self._detach(sandbox_id)
                return {}
            case Attach():
                secrets = SecretSet(op.secrets)
                sandbox = Sandbox(op.sandbox_id, op.policy, secrets, self._intercept_all)
                await self._detach(op.sandbox_id)
                await self._front.attach(sandbox, op.fd)
                self._registry.sandboxes[op.sandbox_id] = sandbox
                return {}

    async def _detach(self, sandbox_id: str) -> None:
        old = self._registry.sandboxes.pop(sandbox_id, None)
        if old is not None:
            await self._front.detach(old)


# Imported now, while the interpreter's files are still readable: after the privilege drop
# the proxy may not be able to read a Python installed under a private home (pyenv's).
_PRELOAD = (
    "certifi", "encodings.idna", "h2.connection", "h11", "wsproto", "aioquic",
    "mitmproxy.proxy.layers", "mitmproxy.proxy.layers.http", "mitmproxy.proxy.layers.tls",
    "mitmproxy.proxy.layers.tcp", "mitmproxy.proxy.layers.websocket",
    "mitmproxy.proxy.layers.modes",
    "mitmproxy.net.tls", "mitmproxy.certs", "mitmproxy.contentviews", "publicsuffixlist",
)  # fmt: skip


def _check_confdir() -> None:
    """After the drop: mitmproxy reads its CA again once running (TlsConfig.running()) and
    would only log an "Addon error" if it could not; a proxy that cannot stops here."""
    for name in (ca.KEY_FILE, ca.DHPARAM_FILE):
        try:
            with open(name, "rb") as f:
                f.read(1)
        except OSError as exc:
            message = f"sandboxd-proxy: its confdir is unreadable after the drop: {exc}"
            raise SystemExit(message) from None


def drop_privileges(uid: int, gid: int) -> None:
    """Become the proxy's unprivileged user for good (no way back, no new privileges)."""
    for name in _PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    parse_network_policy({"type": "allowlist", "allowed_domains": ["preload.example.com"]})
    if os.getuid() == 0:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    if uid != 0 and (os.geteuid() == 0 or os.getegid() == 0):
        raise SystemExit("sandboxd-proxy: privilege drop failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sandboxd-proxy")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--config", required=True, help="JSON settings (no secrets)")
    parser.add_argument("--user", required=True, help="UID:GID to run as")
    parser.add_argument("--log-level", required=True)
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    uid, gid = (int(part) for part in args.user.split(":"))
    try:
        options = ProxyOptions.from_json(args.config)
    except OptionsError as exc:
        raise SystemExit(f"sandboxd-proxy: --config: {exc}") from None
    control = socket.socket(fileno=args.control_fd)

    async def run() -> None:
        await ProxyProcess(control, options).run((uid, gid))

    asyncio.run(run())
    return 0
