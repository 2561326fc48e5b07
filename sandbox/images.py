"""Root filesystems without a registry: image directories under <state_dir>/images/<name>/.

An image is a directory tree (`rootfs/`) plus `image.json` (its build id, packages and
date), made by `sandboxd image build` (see sandbox/image_build.py). The oci backend uses the
tree directly as its shared read-only root; the docker backend imports it once as
`sandboxd/<name>:<build id>`. The empty name "" means no image: the host's own /usr, bound
into a generated skeleton (sandbox/host/rootfs.py). Blocking: call off the event loop.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from sandbox.errors import SandboxError

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
STAMP = "image.json"


class ImageError(SandboxError):
    """An image is missing, half-built or malformed."""


@dataclass(frozen=True)
class BuiltImage:
    name: str
    rootfs: Path
    build_id: str  # changes with every (re)build; the docker tag


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ImageError(f"bad image name {name!r}: lowercase letters, digits, '.', '_', '-'")
    return name


def image_dir(state_dir: Path, name: str) -> Path:
    return state_dir / "images" / check_name(name)


def load(state_dir: Path, name: str) -> BuiltImage:
    """The finished image `name` (its stamp is written last, so a half-built one is absent)."""
    base = image_dir(state_dir, name)
    try:
        meta = json.loads((base / STAMP).read_text())
        build_id = str(meta["build_id"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ImageError(
            f"image {name!r} not found under {base.parent} (build it: sandboxd image build {name})"
        ) from exc
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", build_id) or not (base / "rootfs").is_dir():
        raise ImageError(f"image {name!r} at {base} is malformed")
    # Resolved: runc refuses a rootfs path that is (or passes through) a symlink.
    return BuiltImage(name, (base / "rootfs").resolve(), build_id)


def write_tar(root: Path, out: Path) -> None:
    """A tar of the tree at `root` (numeric owners, modes, symlinks, devices skipped) for
    `docker import`; written to `out` atomically."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if info.ischr() or info.isblk() or info.isfifo():
            return None
        info.uname = info.gname = ""
        return info

    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(root.iterdir()):
            if stat.S_ISSOCK(entry.lstat().st_mode):
                continue
            tar.add(entry, arcname=entry.name, recursive=True, filter=keep)
    os.replace(tmp, out)
