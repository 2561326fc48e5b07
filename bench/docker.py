"""Docker figures, only when an engine answers `docker info` within 5 s (never starts one)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from bench.stats import Summary, summarize, timed_ms

INFO_TIMEOUT_S = 5.0
PREFERRED_IMAGES = ("busybox", "alpine", "debian", "ubuntu")


@dataclass(frozen=True)
class DockerResult:
    figures: list[Summary]
    note: str


def _docker(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )


def _unavailable() -> str | None:
    if shutil.which("docker") is None:
        return "docker: not available (no docker CLI)"
    try:
        _docker("info", timeout=INFO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"docker: not available (`docker info` did not answer within {INFO_TIMEOUT_S} s)"
    except subprocess.CalledProcessError as exc:
        reason = (exc.stderr or "").strip().splitlines()[-1:] or ["no output"]
        return f"docker: not available (`docker info` failed: {reason[0][:160]})"
    return None


def _local_image() -> str | None:
    listed = _docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    images = [i for i in listed if "<none>" not in i]
    for prefix in PREFERRED_IMAGES:
        for image in images:
            if image.split("/")[-1].startswith(prefix):
                return image
    return images[0] if images else None


def measure_docker(n: int) -> DockerResult:
    reason = _unavailable()
    if reason is not None:
        return DockerResult([], reason)
    try:
        return _measure(n)
    except (OSError, subprocess.SubprocessError) as exc:
        return DockerResult([], f"docker: reachable but the measurement failed: {exc}")


def _measure(n: int) -> DockerResult:
    image = _local_image()
    if image is None:
        return DockerResult([], "docker: engine reachable but no local image, skipped")
    run = [
        timed_ms(lambda: _docker("run", "--rm", "--network", "none", image, "true"))[1]
        for _ in range(n + 1)
    ][1:]
    name = f"sbxd-bench-{os.getpid()}"
    _docker("run", "-d", "--rm", "--network", "none", "--name", name, image, "sleep", "infinity")
    try:
        execs = [timed_ms(lambda: _docker("exec", name, "true"))[1] for _ in range(n + 1)][1:]
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60, check=False)
    return DockerResult(
        [
            summarize("docker_run", f"docker run --rm --network none {image} true", run),
            summarize("docker_exec", "docker exec `true`", execs),
        ],
        f"docker: measured with local image {image}",
    )
