"""Run one parsed command and turn what happened into an exit code that means something.

| code | meaning |
| ---- | ------- |
| 0    | done |
| 1    | the API refused (its message is printed), a local file error, or `check` found a FAIL |
| 2    | usage error |
| 69   | the daemon cannot be reached (EX_UNAVAILABLE) |
| 77   | the socket refused us: permission denied (EX_NOPERM) |
| 78   | bad configuration (EX_CONFIG) |
| 130  | interrupted (Ctrl-C) |
| exec | the command's own exit code; 124 on timeout, 137 when killed (OOM, pids, shutdown) |
| output -f | 0 once the process has ended, whatever its exit code (`ps` shows that) |
| shell/attach | its exit code; attach: 0 on Ctrl-P Ctrl-Q; 69 if the daemon went first |
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from sandboxd_client import (
    APIError,
    ConnectionFailed,
    SandboxdError,
    SocketPermissionDenied,
    Target,
)

from daemon import config as config_mod
from daemon.clitool import config_show, containers, processes, run
from daemon.clitool.containers import CommandError, Console

if TYPE_CHECKING:
    from sandboxd_client import Client

EX_USAGE = 2
EX_UNAVAILABLE = 69
EX_NOPERM = 77
EX_INTERRUPTED = 130
EX_PIPE = 141

Command = Callable[["Client", argparse.Namespace, Console], int]


def client_command(name: str, stdin: BinaryIO, stdout: BinaryIO) -> Command:
    # asyncio and termios load only for the commands that use them.
    def shell(c: Client, a: argparse.Namespace, con: Console) -> int:
        from daemon.clitool import terminal

        return terminal.shell(c, a, con, stdin.fileno(), stdout.fileno())

    def attach(c: Client, a: argparse.Namespace, con: Console) -> int:
        from daemon.clitool import terminal

        return terminal.attach(c, a, con, stdin.fileno(), stdout.fileno())

    def port_forward(c: Client, a: argparse.Namespace, con: Console) -> int:
        from daemon.clitool import forward

        return forward.port_forward(c, a, con)

    table: dict[str, Command] = {
        "ls": containers.ls,
        "create": containers.create,
        "rm": containers.rm,
        "logs": containers.logs,
        "top": containers.top,
        "exec": lambda c, a, con: (
            processes.start(c, a, con) if a.detach else run.exec_(c, a, con, stdin)
        ),
        "ps": processes.ps,
        "output": processes.show_output,
        "kill": processes.kill,
        "cp": lambda c, a, con: run.cp(c, a, con, stdout),
        "shell": shell,
        "attach": attach,
        "port-forward": port_forward,
    }
    return table[name]


def run_client(command: Command, args: argparse.Namespace, target: Target, con: Console) -> int:
    return guarded(lambda: _run_client(command, args, target, con))


def _run_client(command: Command, args: argparse.Namespace, target: Target, con: Console) -> int:
    from sandboxd_client import Client  # the HTTP stack: only client commands pay for it

    try:
        # No retries: a command line reports a refusal at once (the user retries, or a
        # script decides), as it always has.
        client = Client(
            socket=target.socket or None, url=target.url or None, api_key=target.api_key,
            env={}, max_retries=0,
        )  # fmt: skip
    except ValueError:
        con.error(f"bad --url {target.url!r}: expected http(s)://HOST:PORT")
        return 1
    try:
        with client:
            return command(client, args, con)
    except SocketPermissionDenied as exc:
        con.error(str(exc))
        return EX_NOPERM
    except ConnectionFailed as exc:
        con.error(str(exc))
        return EX_UNAVAILABLE
    except APIError as exc:  # the daemon's message; its request id is for the daemon's log
        con.error(_one_line(exc.message))
        return 1
    except (CommandError, SandboxdError) as exc:
        con.error(_one_line(str(exc)))
        return 1
    except BrokenPipeError:
        raise
    except OSError as exc:  # local files (cp)
        where = f"{exc.filename}: " if exc.filename else ""
        con.error(f"{where}{exc.strerror or exc}")
        return 1


def run_mcp(target: Target, container: str | None) -> int:
    # The server's module is light; the MCP SDK loads inside serve(), so the CLI starts fast.
    from sandboxd_client.mcp_server import serve

    return guarded(lambda: serve(target, container))


def guarded(body: Callable[[], int]) -> int:
    """Ctrl-C and a closed output pipe (`sandboxd ls | head -1`) end quietly."""
    try:
        return body()
    except KeyboardInterrupt:
        return EX_INTERRUPTED
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 1)  # so the interpreter's final flush cannot fail again
        finally:
            os.close(devnull)
        return EX_PIPE


def _one_line(message: str) -> str:
    return " ".join(message.split()) or "error"


def run_check(args: argparse.Namespace, euid: int, con: Console) -> int:
    from daemon.clitool import check  # the runtime stack: only `check` pays for its import

    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as exc:
        con.error(f"bad configuration: {_one_line(str(exc))}")
        return config_mod.EX_CONFIG
    return guarded(
        lambda: check.report(check.run_checks(cfg, euid, not args.no_live), con.out, args.json)
    )


def run_config_show(
    config: Path | None, effective_socket: Callable[[config_mod.Config], str], con: Console
) -> int:
    try:
        cfg = config_mod.load(config)
    except config_mod.ConfigError as exc:
        con.error(f"bad configuration: {_one_line(str(exc))}")
        return config_mod.EX_CONFIG
    source = str(config) if config is not None else "built-in defaults (no --config)"
    notes = {} if cfg.server.socket else {"server.socket": f"default: {effective_socket(cfg)}"}
    header = (
        f"# sandboxd effective configuration from {source}\n"
        f"# secret values are shown as {config_show.REDACTED!r}\n\n"
    )

    def show() -> int:
        con.out.write(header + config_show.render(cfg, notes))
        con.out.flush()
        return 0

    return guarded(show)
