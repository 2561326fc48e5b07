"""Baseline: plain runc on a bundle built by sandboxd's own code, minus the daemon.

Same rootfs skeleton, host binds, seccomp profile, user namespace, limits and masked paths as a
sandbox; an empty directory instead of the loop-mounted workspace; `process.args` replaced.
Containers use their own runc root and the cgroup parent /sandboxd-bench.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.client import BenchError
from bench.stats import Summary, summarize, timed_ms
from bench.workdir import BASELINE_CGROUP_PARENT
from daemon.config import ContainerConfig, RuntimeConfig
from sandbox.cgroups import CgroupLayout
from sandbox.host import rootfs, workspace
from sandbox.host.agent import AGENT_SCRIPT, INTERPRETER_SCRIPT
from sandbox.host.mounts import HostPaths
from sandbox.idranges import IdRanges
from sandbox.oci.bundle import BundlePaths, build_config
from sandbox.oci.runc import RUNTIME_ENV
from sandbox.seccomp import load_profile
from sandbox.spec import MEMORY_TIERS, SANDBOX_GID, SANDBOX_UID, SandboxSpec

REPO = Path(__file__).resolve().parent.parent
SECCOMP = REPO / "sandbox" / "seccomp.json"
KILL_WAIT_TRIES = 1000
PYTHON_START = ["/usr/bin/python3", "-I", "-S", "-B", "-c", "pass"]
BASELINE_INSTANCE = "bench-baseline"


class Runc:
    """runc with a private --root; one bundle directory per container."""

    def __init__(self, work: Path) -> None:
        self.root = work / "runc-base"
        self._bundles = work / "bundles"
        self._log = work / "runc-base.log"
        self._layout = CgroupLayout.detect()
        # A uid range of its own from the host registry, as a sandbox gets one.
        self._ranges = IdRanges(RuntimeConfig().id_ranges(), BASELINE_INSTANCE)
        self._ids = (self._ranges.claim("baseline"), RuntimeConfig().uid_range_size)
        self._limits = ContainerConfig().limits()
        self._seccomp = load_profile(SECCOMP)  # narrowed to the host arch, as the daemon does
        ws = work / "empty-workspace"
        ws.mkdir(mode=0o755)
        uid, gid = self._ids[0] + SANDBOX_UID, self._ids[0] + SANDBOX_GID
        shutil.chown(ws, uid, gid)
        self._paths = BundlePaths(
            rootfs=str(rootfs.ensure_skeleton(work / "skeleton")),
            host=HostPaths(
                workspace=str(ws),
                agent_script=str(AGENT_SCRIPT),
                interpreter_script=str(INTERPRETER_SCRIPT),
                binds=rootfs.host_binds(),
            ),
        )
        self._bundles.mkdir()
        self._count = 0

    def _config(self, cid: str, args: list[str]) -> dict[str, Any]:
        spec = SandboxSpec(cid, MEMORY_TIERS["1g"], self._limits)
        cgroup = f"{BASELINE_CGROUP_PARENT}/{cid}"
        config = build_config(spec, self._paths, self._ids, cgroup, self._seccomp)
        config["process"]["args"] = args
        return config

    def call(self, *args: str, detach: bool = False) -> None:
        """Run one runc command to completion; BenchError if it fails.

        A detached container inherits runc's stdio, so that is /dev/null and errors go to the
        --log file instead of a pipe the container would hold open. Without a pipe, a timeout
        would make subprocess poll waitpid with sleeps of up to 50 ms, inflating the figure,
        so a detached run waits without one.
        """
        argv = ["runc", "--root", str(self.root), "--log", str(self._log), *args]
        proc = subprocess.run(
            argv,
            env=RUNTIME_ENV,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL if detach else subprocess.PIPE,
            timeout=None if detach else 30,
            check=False,
        )
        if proc.returncode != 0:
            raw = self._log.read_bytes() if detach and self._log.exists() else proc.stderr
            detail = (raw or b"").decode(errors="replace").strip()[-300:]
            raise BenchError(f"runc {' '.join(args)} failed ({proc.returncode}): {detail}")

    @contextmanager
    def bundle(self, args: list[str]) -> Iterator[tuple[str, Path]]:
        """A fresh container id and bundle; the container, cgroup and bundle go on exit."""
        self._count += 1
        cid = f"bench-{self._count}"
        bundle = self._bundles / cid
        bundle.mkdir()
        (bundle / "config.json").write_text(json.dumps(self._config(cid, args)))
        try:
            yield cid, bundle
        finally:
            subprocess.run(
                ["runc", "--root", str(self.root), "delete", "--force", cid],
                env=RUNTIME_ENV,
                capture_output=True,
                timeout=30,
                check=False,
            )
            self._layout.reader(f"{BASELINE_CGROUP_PARENT}/{cid}").remove()
            shutil.rmtree(bundle)

    def close(self) -> None:
        self._layout.reader(BASELINE_CGROUP_PARENT).remove()
        self._ranges.release("baseline")


def _foreground(runc: Runc, args: list[str], n: int) -> list[float]:
    samples = []
    for _ in range(n + 1):  # the first run is a warm-up
        with runc.bundle(args) as (cid, bundle):
            _, ms = timed_ms(lambda: runc.call("run", "--bundle", str(bundle), cid))
            samples.append(ms)
    return samples[1:]


def _detached(runc: Runc, n: int) -> tuple[list[float], list[float]]:
    starts, deletes = [], []
    for _ in range(n + 1):
        with runc.bundle(["/bin/sleep", "infinity"]) as (cid, bundle):
            run = ["run", "--detach", "--bundle", str(bundle), cid]
            _, start_ms = timed_ms(lambda: runc.call(*run, detach=True))  # noqa: B023
            _, delete_ms = timed_ms(lambda: runc.call("delete", "--force", cid))
            starts.append(start_ms)
            deletes.append(delete_ms)
    return starts[1:], deletes[1:]


def _kill_then_delete(runc: Runc, cid: str) -> None:
    """SIGKILL, then a plain `delete` as soon as runc sees the container stopped."""
    runc.call("kill", cid, "KILL")
    for _ in range(KILL_WAIT_TRIES):
        try:
            runc.call("delete", cid)
            return
        except BenchError:
            time.sleep(0.001)
    raise BenchError(f"runc container {cid} still running after SIGKILL")


def _killed(runc: Runc, n: int) -> list[float]:
    samples = []
    for _ in range(n + 1):
        with runc.bundle(["/bin/sleep", "infinity"]) as (cid, bundle):
            runc.call("run", "--detach", "--bundle", str(bundle), cid, detach=True)
            samples.append(timed_ms(lambda: _kill_then_delete(runc, cid))[1])
    return samples[1:]


def _exec(runc: Runc, n: int) -> list[float]:
    with runc.bundle(["/bin/sleep", "infinity"]) as (cid, bundle):
        runc.call("run", "--detach", "--bundle", str(bundle), cid, detach=True)
        samples = [timed_ms(lambda: runc.call("exec", cid, "/bin/true"))[1] for _ in range(n + 1)]
    return samples[1:]


def _workspace(work: Path, n: int) -> tuple[list[float], list[float]]:
    """Workspace create/destroy as the daemon does for every container (the template's mkfs
    happens in the warm-up run)."""
    size = ContainerConfig().workspace_bytes
    owner = (RuntimeConfig().uid_base + SANDBOX_UID, RuntimeConfig().uid_base + SANDBOX_GID)
    mountpoint = work / "ws"
    workspaces = workspace.Workspaces(work / "templates")
    creates, destroys = [], []
    for _ in range(n + 1):
        try:
            _, create_ms = timed_ms(lambda: workspaces.create(mountpoint, size, owner))
        finally:
            _, destroy_ms = timed_ms(lambda: workspace.destroy(mountpoint))
        creates.append(create_ms)
        destroys.append(destroy_ms)
    mountpoint.rmdir()
    return creates[1:], destroys[1:]


def measure_runc(work: Path, n: int) -> tuple[list[Summary], list[Summary]]:
    """(baseline figures, component figures), each from n runs after one warm-up."""
    runc = Runc(work)
    try:
        run_true = _foreground(runc, ["/bin/true"], n)
        starts, deletes = _detached(runc, n)
        killed = _killed(runc, n)
        execs = _exec(runc, n)
        python = _foreground(runc, PYTHON_START, n)
    finally:
        runc.close()
    ws_create, ws_destroy = _workspace(work, n)
    baseline = [
        summarize(
            "runc_run", "runc run `/bin/true` (foreground: create, start, wait, destroy)", run_true
        ),
        summarize("runc_start", "runc run -d `sleep` (create + start)", starts),
        summarize("runc_exec", "runc exec `/bin/true`", execs),
        summarize("runc_delete", "runc delete --force (running `sleep`)", deletes),
        summarize("runc_kill_delete", "runc kill KILL + runc delete (running `sleep`)", killed),
    ]
    components = [
        summarize("python_start", "runc run `python3 -I -S -B -c pass` (foreground)", python),
        summarize(
            "ws_create",
            "workspace create (1 GiB unnamed image: template copy + loop mount)",
            ws_create,
        ),
        summarize(
            "ws_destroy", "workspace destroy (umount; the unnamed image goes with it)", ws_destroy
        ),
    ]
    return baseline, components
