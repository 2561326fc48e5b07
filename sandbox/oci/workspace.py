"""Per-sandbox workspace: a sparse ext4 image, loop-mounted nosuid,nodev on the host.

Its size is the workspace cap (ENOSPC inside the sandbox), its inode table caps file counts,
and the host-side mount is bound into the sandbox at /mnt/data. Blocking: call off the loop.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

from sandbox.errors import RuntimeFailure

TOOL_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


def _run(argv: list[str]) -> None:
    proc = subprocess.run(
        argv, env=TOOL_ENV, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip()[-300:]
        raise RuntimeFailure(f"{argv[0]} failed ({proc.returncode}): {detail}")


def is_mounted(mountpoint: Path) -> bool:
    return os.path.ismount(mountpoint)


def create(image: Path, mountpoint: Path, size_bytes: int, owner: tuple[int, int]) -> None:
    """Make and mount the workspace; on failure nothing is left mounted."""
    with open(image, "wb") as f:
        f.truncate(size_bytes)
    uid, gid = owner
    _run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-m",
            "0",
            "-O",
            "^has_journal",
            "-E",
            f"lazy_itable_init=1,root_owner={uid}:{gid}",
            str(image),
        ]
    )
    mountpoint.mkdir(mode=0o700, exist_ok=True)
    _run(["mount", "-o", "loop,nosuid,nodev,noatime", str(image), str(mountpoint)])
    with contextlib.suppress(OSError):
        (mountpoint / "lost+found").rmdir()
    mountpoint.chmod(0o755)


def destroy(image: Path, mountpoint: Path) -> None:
    """Unmount (lazily if still busy) and delete the image; no error if already gone."""
    if is_mounted(mountpoint):
        try:
            _run(["umount", str(mountpoint)])
        except RuntimeFailure:
            _run(["umount", "-l", str(mountpoint)])
    with contextlib.suppress(FileNotFoundError):
        image.unlink()
