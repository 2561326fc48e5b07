"""Docker figures: sandboxd on its docker backend, and the plain engine in the same run.

The engine is the host's when one answers, else a private `dockerd --bridge=none` started for
the run (bench/dockerd.py; needs root and docker.io). No registry: the image is the one the
docker backend imports from the host (`sandboxd/host:<tag>`, a skeleton whose /usr, /lib...
are bound from the host), so the plain `docker run` gets the same read-only host binds.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import dockerd
from bench.client import BenchError, Client
from bench.daemon import running_daemon
from bench.sandboxd import COLD_TIER, cycle, pool_cycles
from bench.stats import Summary, summarize, timed_ms
from sandbox.host.rootfs import host_binds


@dataclass(frozen=True)
class DockerResult:
    figures: list[Summary]
    note: str


def _cli(url: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": "/root"}
    return subprocess.run(
        ["docker", "-H", url, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
        env=env,
    )


def measure_docker(n: int, work: Path) -> DockerResult:
    reason = dockerd.why_unavailable()
    if reason is not None:
        return DockerResult([], f"docker: not available ({reason})")
    try:
        with dockerd.engine() as url:
            ours, image = _measure_sandboxd(n, work, url)
            return DockerResult(
                [*ours, *_measure_engine(n, url, image)],
                f"docker: engine at {url}, image {image} (+ host binds)",
            )
    except (OSError, subprocess.SubprocessError, BenchError, RuntimeError) as exc:
        return DockerResult([], f"docker: reachable but the measurement failed: {exc}")


def _measure_sandboxd(n: int, work: Path, url: str) -> tuple[list[Summary], str]:
    dwork = work / "d"  # short: agent socket paths must stay < 108 bytes
    dwork.mkdir()
    with running_daemon(dwork, engine_url=url) as daemon, Client(str(daemon.socket)) as c:
        live: set[str] = set()
        cold = [cycle(c, f"dk-{i}", COLD_TIER, live) for i in range(n + 1)][1:]  # 1 warm-up
        hits = pool_cycles(c, n, "dk-pool", live)
        cid = c.call("POST", "/v1/containers", {"name": "dk-exec"})["id"]
        path = f"/v1/containers/{cid}/exec"
        for _ in range(20):
            c.call("POST", path, {"commands": ["true"]})
        execs = [
            timed_ms(lambda: c.call("POST", path, {"commands": ["true"]}))[1] for _ in range(5 * n)
        ]
        c.call("DELETE", f"/v1/containers/{cid}")
    images = _cli(url, "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", "sandboxd/host")
    image = images.stdout.split()[0]
    return [
        summarize("dk_create", "sandboxd (docker backend) cold create", [x.create for x in cold]),
        summarize(
            "dk_to_exec",
            "sandboxd (docker backend) create → first exec `true` done",
            [x.to_exec for x in cold],
        ),
        summarize(
            "dk_pool_create",
            "sandboxd (docker backend) create, warm-pool hit",
            [x.create for x in hits],
        ),
        summarize(
            "dk_pool_to_exec",
            "sandboxd (docker backend) create, pool hit → first exec `true` done",
            [x.to_exec for x in hits],
        ),
        summarize("dk_exec", "sandboxd (docker backend) exec `true` (warm container)", execs),
    ], image


def _binds() -> Iterator[str]:
    for src, dst in host_binds():
        yield from ("-v", f"{src}:{dst}:ro")


def _measure_engine(n: int, url: str, image: str) -> list[Summary]:
    binds = list(_binds())
    run_argv = ("run", "--rm", "--network", "none", *binds, image, "true")
    run = [timed_ms(lambda: _cli(url, *run_argv))[1] for _ in range(n + 1)][1:]
    name = f"sbxd-bench-{os.getpid()}"
    _cli(url, "run", "-d", "--rm", "--network", "none", "--name", name, *binds, image,
         "sleep", "infinity")  # fmt: skip
    try:
        execs = [timed_ms(lambda: _cli(url, "exec", name, "true"))[1] for _ in range(n + 1)][1:]
    finally:
        subprocess.run(["docker", "-H", url, "rm", "-f", name], capture_output=True, timeout=60,
                       check=False)  # fmt: skip
    return [
        summarize("docker_run", f"docker run --rm --network none {image} true", run),
        summarize("docker_exec", "docker exec `true`", execs),
    ]
