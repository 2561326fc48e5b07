"""What the figures were measured on."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Machine:
    date: str
    cpus: int
    cpu_model: str
    memory: str
    kernel: str
    os: str
    runc: str
    cgroup: str
    python: str
    commit: str
    load: str  # 1, 5, 15 min load average when the run started
    tmp_fs: str  # filesystem of /tmp, which holds the daemon's state (sqlite) and workspaces


def _output(*argv: str) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return ""
    return proc.stdout.strip()


def _first(path: str, key: str, sep: str = ":") -> str:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return "unknown"
    for line in lines:
        name, _, value = line.partition(sep)
        if name.strip() == key:
            return value.strip().strip('"')
    return "unknown"


def _cgroup_mode() -> str:
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return "v2 (unified)"
    mounts = Path("/proc/self/mountinfo").read_text()
    if " /sys/fs/cgroup/unified " in mounts:
        return "v1 (hybrid: cgroup2 also mounted at /sys/fs/cgroup/unified, no controllers)"
    return "v1"


def _commit() -> str:
    head = _output("git", "-C", str(REPO), "rev-parse", "--short", "HEAD") or "unknown"
    dirty = _output("git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no")
    return f"{head} + uncommitted changes" if dirty else head


def describe() -> Machine:
    mem_kib = _first("/proc/meminfo", "MemTotal").split()[0]
    return Machine(
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cpus=len(os.sched_getaffinity(0)),
        cpu_model=_first("/proc/cpuinfo", "model name"),
        memory=f"{int(mem_kib) / (1 << 20):.1f} GiB" if mem_kib.isdigit() else "unknown",
        kernel=os.uname().release,
        os=_first("/etc/os-release", "PRETTY_NAME", "="),
        runc=(_output("runc", "--version").splitlines() or ["unknown"])[0],
        cgroup=_cgroup_mode(),
        python=platform.python_version(),
        commit=_commit(),
        load=", ".join(f"{x:.2f}" for x in os.getloadavg()),
        tmp_fs=_output("findmnt", "-n", "-o", "FSTYPE", "--target", "/tmp") or "unknown",
    )
