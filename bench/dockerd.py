"""A Docker engine for the benchmark and the docker-marked tests: the host's, or a private
dockerd of our own (here, in bench/, so that the benchmark needs nothing from tests/).

When nothing answers on /var/run/docker.sock, the session starts
`dockerd --bridge=none --iptables=false` with its data, exec root, socket and pidfile under a
short /tmp/sbxd-dockerd-XXXX dir (no registry, no network: the test image is imported from the
host by the runtime itself), and stops it and removes everything at the end of the session.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HOST_SOCKET = "/var/run/docker.sock"


def answers(sock_path: str, timeout: float = 2.0) -> bool:
    """Does a Docker engine answer GET /_ping on this unix socket?"""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(sock_path)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = s.recv(64)
            return reply.startswith(b"HTTP/1.") and b" 200 " in reply
    except OSError:
        return False


def why_unavailable() -> str | None:
    """None when the tests can get an engine (one answers, or dockerd can be started)."""
    if answers(HOST_SOCKET):
        return None
    if os.geteuid() != 0:
        return "no Docker engine answers and starting dockerd needs root"
    if shutil.which("dockerd") is None:
        return "no Docker engine answers and dockerd is not installed (scripts/setup --test)"
    return None


class PrivateDockerd:
    """`dockerd --bridge=none --iptables=false` with everything under a short /tmp dir."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sbxd-dockerd-"))
        self.sock = self.root / "docker.sock"
        self.log = self.root / "dockerd.log"
        self.url = f"unix://{self.sock}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            "dockerd", "--bridge=none", "--iptables=false", "--ip-masq=false",
            "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
            "-H", self.url, "--pidfile", str(self.root / "dockerd.pid"),
        ]  # fmt: skip
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=out, env=env, start_new_session=True
            )
        deadline = time.monotonic() + 60
        while not answers(str(self.sock)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL of the engine (dockerd and the containerd it runs), as a crash looks to
        sandboxd. The containerd pidfile goes too: an orphan that nobody reaps would look
        alive to the next dockerd, which would wait for it."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.proc = None
        containerd = self.root / "exec" / "containerd"
        subprocess.run(["pkill", "-KILL", "-f", f"containerd --config {containerd}"], check=False)
        with contextlib.suppress(FileNotFoundError):
            (containerd / "containerd.pid").unlink()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        for point in _mounts_under(self.root):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def engine() -> Iterator[str]:
    """Yield an engine URL (unix://...) for the duration of the block."""
    if answers(HOST_SOCKET):
        yield f"unix://{HOST_SOCKET}"
        return
    private = PrivateDockerd()
    try:
        private.start()
        yield private.url
    finally:
        private.stop()


def _mounts_under(prefix: Path) -> list[str]:
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            if point.startswith(f"{prefix}/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def api_get(engine_url: str, path: str, method: str = "GET") -> Any:
    """`method` `path` of the engine API (JSON reply); for host-side checks in tests."""
    sock_path = engine_url.removeprefix("unix://")
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(sock_path)
        s.sendall(f"{method} /v1.41{path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
        data = bytearray()
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if b" 200 " not in status and b" 204 " not in status:
        raise RuntimeError(f"engine {method} {path}: {head[:200]!r} {body[:300]!r}")
    return json.loads(body) if body.strip() else None


def remove_container(engine_url: str, container_id: str) -> None:
    api_get(engine_url, f"/containers/{container_id}?force=1&v=1", "DELETE")


def containers(engine_url: str, label: str) -> list[dict[str, Any]]:
    """Every container (any state) carrying `label` ("key=value")."""
    filters = urllib.parse.quote(json.dumps({"label": [label]}))
    found: list[dict[str, Any]] = api_get(engine_url, f"/containers/json?all=1&filters={filters}")
    return found
