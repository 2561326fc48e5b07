"""The benchmark's scratch directory under /tmp and the safety net that empties it.

Everything the benchmark creates lives below one `mkdtemp` directory: the daemon's socket,
state and runc root, and the baseline's bundle and runc root. On exit, whatever the
measurements did not clean up themselves (after an error, say) is removed here: containers
in both runc roots, mounts below the directory, and the cgroups of those containers.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sandbox.cgroups import CgroupError, CgroupLayout
from sandbox.host.dirs import instance_of
from sandbox.oci.runc import RUNTIME_ENV
from sandbox.oci.runtime import forget_instance

DAEMON_CGROUP_PARENT = "/sandboxd"  # the daemon's default runtime.cgroup_parent
BASELINE_CGROUP_PARENT = "/sandboxd-bench"
CLEANUP_ERRORS = (OSError, subprocess.SubprocessError, CgroupError, ValueError)


def _warn(message: str) -> None:
    print(f"bench: cleanup: {message}", file=sys.stderr)


def _runc(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runc", "--root", str(root), *args],
        env=RUNTIME_ENV,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def mounts_below(top: Path) -> list[Path]:
    """Mount points at or below `top`, deepest first (from /proc/self/mountinfo)."""
    found: list[Path] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        raw = line.split(" ")[4]
        point = Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), raw))
        if point == top or top in point.parents:
            found.append(point)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _remove_containers(root: Path) -> list[str]:
    """Force-delete every container in one runc root; return their ids."""
    if not root.is_dir():
        return []
    listed = _runc(root, "list", "-q")
    ids = listed.stdout.split() if listed.returncode == 0 else []
    for cid in ids:
        _warn(f"deleting leftover container {cid} in {root}")
        _runc(root, "delete", "--force", cid)
    return ids


def _cleanup(top: Path) -> None:
    layout = CgroupLayout.detect()
    instance = instance_of(top / "state")
    daemon_ids = set(_remove_containers(top / "runc" / instance / "state"))
    _remove_containers(top / "runc-base")
    for point in mounts_below(top):
        if point != top / "runc" / instance / "rootfs":  # kept between sandboxes, by design
            _warn(f"unmounting leftover {point}")
        if subprocess.run(["umount", str(point)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], check=False)
    for cid in sorted(daemon_ids):
        layout.reader(f"{DAEMON_CGROUP_PARENT}/{instance}/{cid}").remove()
    layout.reader(BASELINE_CGROUP_PARENT).remove()
    forget_instance(
        top / "runc", [DAEMON_CGROUP_PARENT, f"{DAEMON_CGROUP_PARENT}-docker"], instance
    )
    remaining = mounts_below(top)
    if remaining:
        raise OSError(f"still mounted, not removing {top}: {remaining}")
    shutil.rmtree(top)


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    """A short /tmp directory (unix socket paths must stay under 107 bytes), emptied on exit.

    Mode 0711: the sandboxes' mapped root must traverse it to reach the rootfs and binds.
    """
    top = Path(tempfile.mkdtemp(prefix="sbxd-bench-", dir="/tmp"))
    top.chmod(0o711)
    try:
        yield top
    finally:
        try:
            _cleanup(top)
        except CLEANUP_ERRORS as exc:
            _warn(f"incomplete, check by hand: {exc}")
