"""Run `sandboxd serve` for a benchmark on a private socket, state dir and runc root (through
bench/launcher.py, as the tests do)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import machine
from bench.client import BenchError
from bench.launcher import LaunchError, SandboxdProcess

MEMORY_OVERCOMMIT = 100
MAX_CONTAINERS = 1000  # the density run keeps hundreds alive at once


@dataclass(frozen=True)
class RunningDaemon:
    socket: Path
    log: Path  # the daemon's stderr: one JSON object per line
    argv: tuple[str, ...]
    pid: int
    state: Path  # its state directory (the store is state/sandboxd.db)


def sandboxd_binary() -> Path:
    """The `sandboxd` entry point next to the running interpreter (.venv/bin/sandboxd)."""
    found = Path(sys.executable).with_name("sandboxd")
    if not found.exists():
        raise BenchError(f"{found} not found: run with the project's .venv/bin/python")
    return found


@contextlib.contextmanager
def running_daemon(
    work: Path,
    engine_url: str = "",
    *,
    server_toml: str = "",
    code: Path | None = None,
    pool: str = "{ 1g = 2 }",
) -> Iterator[RunningDaemon]:
    """Start the daemon (the docker backend when given an engine URL), wait for GET /healthz,
        and always SIGTERM it and wait on exit. `server_toml`: lines of its [server] table (the
        soak adds a TCP listener with one bearer key per owner). `code`: the source tree of
        another revision to run instead of this one (`python -m bench.against`). `pool`: the
    [pool] sizes (by default 1g creates hit the warm pool; 4g creates are the cold path)."""
    config = work / "sandboxd.toml"
    backend = f'backend = "docker"\n[docker]\nengine_url = "{engine_url}"\n' if engine_url else ""
    server = f"[server]\n{server_toml}\n" if server_toml else ""
    # Idle density creates far more 1g sandboxes than RAM would back at full use (admission
    # control; a revision from before it knows no such key).
    known = (code or machine.REPO) / "daemon" / "config.py"
    overcommit = "memory_overcommit" in known.read_text()
    config.write_text(
        f'{server}[runtime]\nruntime_root = "{work / "runc"}"\n{backend}'
        f"[pool]\nsizes = {pool}\n"
        f"[containers]\nmax_containers_per_owner = {MAX_CONTAINERS}\n"
        + (f"memory_overcommit = {MEMORY_OVERCOMMIT}\n" if overcommit else "")
    )
    sock, log = work / "api.sock", work / "daemon.log"
    command = (sys.executable, "-m", "daemon") if code else (str(sandboxd_binary()),)
    argv = (
        *command,
        "serve",
        "--config",
        str(config),
        "--socket",
        str(sock),
        "--state-dir",
        str(work / "state"),
    )
    daemon = SandboxdProcess(config, sock, log)
    try:
        daemon.start(argv=argv, env={"PYTHONPATH": str(code)} if code else None, cwd=code)
    except LaunchError as exc:
        raise BenchError(str(exc)) from None
    try:
        yield RunningDaemon(sock, log, argv, daemon.pid, work / "state")
    finally:
        daemon.stop()
