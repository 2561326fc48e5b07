"""The one way tests and benchmarks run `sandboxd serve` as a subprocess: config from tables,
its own session (so a kill of the group takes the runc calls in flight too), output to a log
file, ready once GET /healthz answers 200 on its socket, stopped by SIGTERM (then SIGKILL).

tests/api/conftest.py, tests/e2e/harness.py and bench/daemon.py build on it; bench/ imports
nothing from tests/, so it lives here."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


class LaunchError(Exception):
    """The daemon exited or did not become healthy; the message ends with its log's tail."""


def toml(value: Any) -> str:
    """A TOML value (tables inline)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {toml(v)}' for k, v in value.items()) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(
    path: Path, tables: Mapping[str, Mapping[str, Any]], top: Mapping[str, Any] | None = None
) -> None:
    """A config file: `top` keys, then one [table] per entry of `tables`."""
    lines = [f"{k} = {toml(v)}" for k, v in (top or {}).items()]
    for name, values in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")


def log_tail(log: Path, chars: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _healthy(sock: str) -> bool:
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
        s.settimeout(2.0)
        s.connect(sock)
        s.sendall(HEALTHZ)
        return s.recv(64).startswith(b"HTTP/1.1 200")
    return False


class SandboxdProcess:
    """`sandboxd serve --config CONFIG` (or another argv) whose API socket is `socket`."""

    def __init__(self, config: Path, socket_path: str | Path, log: Path) -> None:
        self.config = config
        self.socket = str(socket_path)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(
        self,
        *,
        argv: Sequence[str] | None = None,
        prefix: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        timeout_s: float = READY_TIMEOUT_S,
    ) -> None:
        """Start it (under a wrapper `prefix` such as systemd-socket-activate, or as another
        `argv`), with PATH and `env` only, and wait until it is healthy."""
        argv = argv or [sys.executable, "-m", "daemon", "serve", "--config", str(self.config)]
        path = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*prefix, *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=cwd,
                start_new_session=True,  # a kill of the group takes runc calls in flight too
                env={"PATH": path, **(env or {})},
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise LaunchError(f"daemon exited with {code}:\n{log_tail(self.log)}")
            if _healthy(self.socket):
                return
            time.sleep(0.02)
        self.kill_group()
        raise LaunchError(f"sandboxd not healthy after {timeout_s:.0f} s:\n{log_tail(self.log)}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait; SIGKILL if it does not end in time. Its exit code."""
        assert self.proc is not None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            print("sandboxd ignored SIGTERM, killing it", file=sys.stderr)
            proc.kill()
            return proc.wait()

    def kill(self) -> None:
        """SIGKILL the daemon alone."""
        assert self.proc is not None
        proc, self.proc = self.proc, None
        proc.kill()
        proc.wait()

    def kill_group(self) -> None:
        """SIGKILL the daemon's process group: the daemon and the runc calls it has in flight
        (a sandbox may be left half-made, in some cgroup hierarchies only)."""
        assert self.proc is not None
        proc, self.proc = self.proc, None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
