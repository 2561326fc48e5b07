"""The daemon's instance id and its dirs on the host: the state dir and every sandbox's dir.

Nothing a sandbox owns on the host is reachable by other host accounts: the state dir, its
`sandboxes/` and every sandbox's dir are 0700 root, and what a sandbox's own ids must reach
lies below that. A sandbox's dir is named after the first host id of its uid range, not its
container id, so neither the host's world-readable /proc/mounts nor the sandbox's own
mountinfo names a container."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from sandbox.errors import RuntimeFailure
from sandbox.host import workspace


def instance_of(state_dir: Path) -> str:
    """The instance id of the daemon that owns `state_dir`: part of every host-wide name it
    creates or reconciles (runtime root, cgroup parents, id-range claims, docker labels), so
    two daemons on one host never touch each other's sandboxes."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:16]


def make_state_dirs(state_dir: Path) -> None:
    """The state dir and sandboxes/, 0700 root: sandboxes reach what they need by mounts."""
    for path in (state_dir, state_dir / "sandboxes"):
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.chmod(0o700)


def sandbox_dir(state_dir: Path, name: str) -> Path:
    if "/" in name or name in ("", ".", ".."):
        raise ValueError("bad sandbox dir name")
    return state_dir / "sandboxes" / name


def make_sandbox_dir(sdir: Path) -> None:
    sdir.mkdir(mode=0o700)


def make_private_dir(path: Path, owner: tuple[int, int], mode: int = 0o700) -> None:
    path.mkdir(mode=mode)
    os.chown(path, *owner)
    path.chmod(mode)


def remove_sandbox_dir(sdir: Path) -> None:
    if workspace.is_mounted(sdir / "data"):
        raise RuntimeFailure(f"{sdir / 'data'} is still mounted; not removing {sdir}")
    shutil.rmtree(sdir, ignore_errors=True)
