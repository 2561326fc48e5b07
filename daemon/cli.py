"""`sandboxd` command line: the only place that reads os.environ and argv."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from daemon import config as config_mod
from daemon import logs
from daemon.daemon import Daemon, StartupError

logger = logging.getLogger("daemon.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sandboxd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument("--config", type=Path, help="TOML configuration file")
    serve.add_argument("--socket", help="API unix socket path")
    serve.add_argument("--state-dir", help="state directory (default /var/lib/sandboxd)")
    serve.add_argument("--runtime", choices=["oci", "docker"], help="sandbox backend")
    serve.add_argument("--tcp", metavar="HOST:PORT", help="also listen on TCP (needs api_keys)")
    return parser


def serve(args: argparse.Namespace, env: dict[str, str]) -> int:
    overrides: dict[str, Any] = {}
    if args.state_dir:
        overrides["state_dir"] = args.state_dir
    if args.runtime:
        overrides["runtime.backend"] = args.runtime
    if args.tcp:
        overrides["server.tcp"] = args.tcp
    if args.socket:
        overrides["server.socket"] = args.socket
    journald = "JOURNAL_STREAM" in env
    logs.setup("info", journald)
    try:
        cfg = config_mod.load(args.config, overrides)
    except config_mod.ConfigError as exc:
        logger.error("bad configuration: %s", exc)
        return config_mod.EX_CONFIG
    logs.setup(cfg.log_level, journald)
    socket_path = cfg.server.socket or config_mod.default_socket(os.geteuid(), env)
    try:
        asyncio.run(_serve(cfg, socket_path))
    except StartupError as exc:
        logger.error("cannot start: %s", exc)
        return 1
    return 0


async def _serve(cfg: config_mod.Config, socket_path: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Daemon(cfg, socket_path):
        await stop.wait()
        logger.info("shutting down")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args, dict(os.environ))
    return 2


if __name__ == "__main__":
    sys.exit(main())
