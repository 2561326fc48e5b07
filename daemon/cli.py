"""`sandboxd` command line: the only place that reads os.environ and argv.

`serve` runs the daemon; `check` and `config show` run locally; the other commands are
clients of a running daemon (see daemon/clitool/, and dispatch.py for exit codes).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import re
import resource
import signal
import sys
from pathlib import Path
from typing import Any

from sandboxd_client.discovery import Target, discover
from sandboxd_client.mcp_server import add_arguments as mcp_arguments

from daemon import config as config_mod
from daemon import logs
from daemon.clitool import dispatch, image
from daemon.clitool.containers import Console
from daemon.systemd import SystemdEnv

logger = logging.getLogger("daemon.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sandboxd",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _connection_flags(parser, prefix="global_")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument("--config", type=Path, help="TOML configuration file")
    serve.add_argument("--socket", help="API unix socket path")
    serve.add_argument("--state-dir", help="state directory (default /var/lib/sandboxd)")
    serve.add_argument("--runtime", choices=["oci", "docker"], help="sandbox backend")
    serve.add_argument(
        "--default-image", metavar="NAME", help="image of creates that name none (default host)"
    )
    serve.add_argument("--tcp", metavar="HOST:PORT", help="also listen on TCP (needs api_keys)")
    _local_parsers(sub)
    _client_parsers(sub)
    return parser


def _connection_flags(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    group = parser.add_argument_group("connection (client commands)")
    group.add_argument(
        "--socket", dest=f"{prefix}socket", metavar="PATH",
        help="daemon's unix socket (default $SANDBOXD_SOCKET, else the daemon's default)",
    )  # fmt: skip
    group.add_argument(
        "--url", dest=f"{prefix}url", metavar="URL",
        help="talk TCP instead, e.g. http://127.0.0.1:8080 (default $SANDBOXD_URL)",
    )  # fmt: skip
    group.add_argument(
        "--api-key", dest=f"{prefix}api_key", metavar="KEY",
        help="bearer key for --url (prefer $SANDBOXD_API_KEY: argv is visible to others)",
    )  # fmt: skip


def _client_parsers(sub: Any) -> None:
    conn = argparse.ArgumentParser(add_help=False)
    _connection_flags(conn)
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="machine-readable JSON output")
    common = [conn, as_json]

    ls = sub.add_parser("ls", parents=common, help="list containers")
    ls.add_argument("-a", "--all", action="store_true", help="include expired containers")

    create = sub.add_parser("create", parents=common, help="create a container, print its id")
    create.add_argument("name")
    create.add_argument("--memory", default="1g", choices=["1g", "4g", "16g", "64g"])
    create.add_argument(
        "--minutes", type=int, help="idle minutes before it expires (daemon default: 20)"
    )
    create.add_argument(
        "--image", help="what it runs on (`sandboxd image ls`; default: the daemon's)"
    )

    ex = sub.add_parser(
        "exec", parents=[conn], help="run a command in a container, streaming its output",
        description="Options go before ID; everything after ID (or after --) is the command.",
    )  # fmt: skip
    ex.add_argument("--timeout", type=float, metavar="SECONDS", help="kill after this long")
    ex.add_argument("-e", "--env", action="append", metavar="KEY=VALUE", help="repeatable")
    ex.add_argument("-w", "--workdir", metavar="DIR", help="working directory (default /mnt/data)")
    ex.add_argument("--max-output", type=int, metavar="BYTES", help="cap on stdout+stderr")
    ex.add_argument("-i", "--stdin", action="store_true", help="send our stdin (UTF-8 text)")
    ex.add_argument(
        "--sh", action="store_true", help="COMMAND is shell syntax: join words unquoted"
    )
    ex.add_argument(
        "-d", "--detach", action="store_true",
        help="run it in the background: print its process id (see ps, output, kill)",
    )  # fmt: skip
    ex.add_argument("id", help="container id, unique id prefix or unique name")
    ex.add_argument("argv", nargs=argparse.REMAINDER, metavar="COMMAND")
    _process_parsers(sub, conn, common)
    _terminal_parsers(sub, conn)

    cp = sub.add_parser(
        "cp", parents=common, help="copy a file into (LOCAL ID:PATH) or out of (ID:PATH LOCAL)",
        description="Uploads land in /mnt/data under the given file name: only the base name "
        "is kept. Downloads find the container file whose path matches; LOCAL may be - for "
        "stdout. Write ./a:b for a local name with a colon.",
    )  # fmt: skip
    cp.add_argument("src")
    cp.add_argument("dst")

    logs_ = sub.add_parser("logs", parents=common, help="a container's lifecycle events")
    logs_.add_argument("id")

    rm = sub.add_parser("rm", parents=[conn], help="delete containers")
    rm.add_argument("ids", nargs="*", metavar="ID")
    rm.add_argument("--expired", action="store_true", help="also delete every expired one")

    top = sub.add_parser("top", parents=common, help="running containers by last activity")
    top.add_argument("--once", action="store_true", help="print once and exit")
    top.add_argument("--interval", type=float, default=2.0, metavar="SECONDS")

    mcp = sub.add_parser(
        "mcp", parents=[conn], help="serve sandboxes as tools to an MCP host (stdio)",
        description="An MCP server on stdin/stdout: register `sandboxd mcp` with the host.",
    )  # fmt: skip
    mcp_arguments(mcp)


def _process_parsers(sub: Any, conn: argparse.ArgumentParser, common: list[Any]) -> None:
    from daemon.clitool.processes import FORGET_HINT  # here: this block stays one hunk

    ps = sub.add_parser("ps", parents=common, help="a container's background processes")
    ps.add_argument("id", help="container id, unique id prefix or unique name")

    out = sub.add_parser(
        "output", parents=[conn], help="a background process's output",
        description="Its stdout to ours, its stderr to ours. Without -f: what it has written "
        "so far. The daemon keeps each process's last 4 MiB (processes.ring_bytes).",
    )  # fmt: skip
    out.add_argument("id", help="container id, unique id prefix or unique name")
    out.add_argument("pid", metavar="PID", help="process id or unique id prefix")
    out.add_argument(
        "-f", "--follow", action="store_true",
        help="go on as it writes, until it ends (resuming after a dropped connection)",
    )  # fmt: skip
    out.add_argument(
        "--offset", type=int, default=0, metavar="BYTE", help="start at this byte of its output"
    )

    kill = sub.add_parser(
        "kill", parents=common, help="signal a background process (default TERM)",
        description=FORGET_HINT,
    )  # fmt: skip
    kill.add_argument("id", help="container id, unique id prefix or unique name")
    kill.add_argument("pid", metavar="PID", help="process id or unique id prefix")
    kill.add_argument(
        "-s", "--signal", default="TERM", metavar="SIGNAL",
        help="INT, TERM, KILL, HUP, QUIT, USR1, USR2 or WINCH (a SIG prefix or the number works)",
    )  # fmt: skip


def _terminal_parsers(sub: Any, conn: argparse.ArgumentParser) -> None:
    shell = sub.add_parser(
        "shell", parents=[conn], help="an interactive shell in a container (like docker exec -it)",
        description="Starts a process on a terminal of its own (bash -l where the container "
        "has bash, else sh), sized like this one, and joins this terminal to it: keys go "
        "there (Ctrl-C, Ctrl-D and Ctrl-Z are its own), its output comes here, a resize "
        "follows. It ends when that process ends (exit, Ctrl-D): its exit code is ours, and "
        "the process is deleted. With a pipe on stdin it gets no terminal: the pipe's bytes "
        "are its stdin, closed at the pipe's end.",
    )  # fmt: skip
    shell.add_argument("id", help="container id, unique id prefix or unique name")
    shell.add_argument("--cmd", metavar="CMD", help="run CMD (one shell line) instead")
    shell.add_argument("-e", "--env", action="append", metavar="KEY=VALUE", help="repeatable")

    attach = sub.add_parser(
        "attach", parents=[conn], help="join this terminal to a background process",
        description="Its output comes here, our keys go to it (the newest attachment that "
        "writes is the one that does). On a process's terminal ours is raw and Ctrl-P Ctrl-Q "
        "detaches, leaving it running; a process without one reads our lines (Ctrl-D closes "
        "its stdin, Ctrl-C detaches). If it ends, its exit code is ours.",
    )  # fmt: skip
    attach.add_argument("id", help="container id, unique id prefix or unique name")
    attach.add_argument("pid", metavar="PID", help="process id or unique id prefix")
    attach.add_argument(
        "--offset", type=int, metavar="BYTE",
        help="first replay its output from this byte (what the daemon still keeps)",
    )  # fmt: skip
    attach.add_argument("--ro", action="store_true", help="watch only: send no input")

    forward = sub.add_parser(
        "port-forward", parents=[conn],
        help="serve a container's port on a local one, through the API",
        description="Listens on 127.0.0.1:LOCAL (LOCAL defaults to PORT; 0 picks a free "
        "one) and relays every HTTP request that arrives, WebSockets included, to the "
        "server on PORT inside the container (the API's ports route). Prints the local URL; "
        "Ctrl-C stops it.",
    )  # fmt: skip
    forward.add_argument("id", help="container id, unique id prefix or unique name")
    forward.add_argument("spec", metavar="[LOCAL:]PORT")
    forward.add_argument(
        "--address", metavar="ADDR",
        help="listen on ADDR instead of 127.0.0.1 (anyone who reaches it reaches the server)",
    )  # fmt: skip


def _local_parsers(sub: Any) -> None:
    check = sub.add_parser("check", help="preflight: can this host run sandboxes?")
    check.add_argument("--config", type=Path, help="TOML configuration file")
    check.add_argument("--json", action="store_true", help="machine-readable JSON output")
    check.add_argument("--no-live", action="store_true", help="skip starting a test sandbox")
    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser("show", help="print the effective config (secrets redacted)")
    show.add_argument("--config", type=Path, help="TOML configuration file")
    key = sub.add_parser("key", help="API keys for the TCP listener")
    key_sub = key.add_subparsers(dest="key_command", required=True)
    new = key_sub.add_parser("new", help="make a key; print it and the config line to add")
    new.add_argument("owner", help="owner name for the key (letters, digits, - and _)")
    image.add_parser(sub)


def serve(args: argparse.Namespace, env: dict[str, str]) -> int:
    from daemon.composition import StartupError  # aiohttp & co.: client commands skip it

    overrides: dict[str, Any] = {}
    if args.state_dir:
        overrides["state_dir"] = args.state_dir
    if args.runtime:
        overrides["runtime.backend"] = args.runtime
    if args.default_image:
        overrides["runtime.default_image"] = args.default_image
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
    if not cfg.docker.engine_url and env.get("DOCKER_HOST"):
        # DOCKER_HOST is the default of docker.engine_url (a configured value wins).
        docker_cfg = dataclasses.replace(cfg.docker, engine_url=env["DOCKER_HOST"])
        cfg = dataclasses.replace(cfg, docker=docker_cfg)
    # One idle agent connection per sandbox: let the daemon use its whole descriptor quota.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socket_path = cfg.server.socket or config_mod.default_socket(os.geteuid(), env)
    try:
        asyncio.run(_serve(cfg, socket_path, SystemdEnv.from_environ(env, os.getpid())))
    except StartupError as exc:
        logger.error("cannot start: %s", exc)
        return 1
    return 0


async def _serve(cfg: config_mod.Config, socket_path: str, systemd: SystemdEnv) -> None:
    from daemon.composition import Daemon

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Daemon(cfg, socket_path, systemd=systemd):
        await stop.wait()
        logger.info("shutting down")


def client_target(args: argparse.Namespace, env: dict[str, str], euid: int) -> Target | None:
    """Where the daemon is, from flags, then the environment, then the default socket (the
    client's own rules, sandboxd_client.discovery); None when both a socket and a URL are
    given."""
    socket_path = getattr(args, "socket", None) or args.global_socket
    url = getattr(args, "url", None) or args.global_url
    if socket_path and url:
        return None
    key = getattr(args, "api_key", None) or args.global_api_key
    return discover(socket_path, url, key, env, euid)


def _new_key(owner: str, con: Console) -> int:
    from daemon import keys

    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", owner):
        con.error("owner must be 1-64 letters, digits, '-' or '_'")
        return 2
    key = keys.new_key()
    con.out.write(
        f"key: {key}\n"
        "Give the key to its user (it is not stored anywhere); add under [server]:\n"
        f'api_keys = {{ {owner} = "{keys.hash_key(key)}" }}\n'
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if args.command == "serve":
        return serve(args, env)
    con = Console(sys.stdout, sys.stderr)
    if args.command == "check":
        return dispatch.run_check(args, os.geteuid(), con)
    if args.command == "key":
        return _new_key(args.owner, con)
    if args.command == "image":
        return image.run(args, os.geteuid(), con)
    if args.command == "config":
        return dispatch.run_config_show(
            args.config, lambda cfg: config_mod.default_socket(os.geteuid(), env), con
        )
    target = client_target(args, env, os.geteuid())
    if target is None:
        parser.error("give either --socket or --url, not both")
    if args.command == "mcp":
        return dispatch.run_mcp(target, args.container)
    command = dispatch.client_command(args.command, sys.stdin.buffer, sys.stdout.buffer)
    return dispatch.run_client(command, args, target, con)


if __name__ == "__main__":
    sys.exit(main())
