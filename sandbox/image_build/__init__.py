"""`sandboxd image build`: Debian root filesystems for sandboxes, made locally from recipes.

recipe.py reads a recipe (config/images/*.toml), stages.py runs the build's stages in a
tree (debootstrap, apt, a Python venv with wheels, npm, verify), metadata.py reads what the
finished tree contains, builder.py puts it together: a build lands in
<state_dir>/images/<name>/builds/<build id>/ (the layout of sandbox/images.py) and is then
published as the image's current build. This module owns what every tree must look like for
the runtimes (the sandbox user, mount targets): `finish_tree`.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from sandbox.images import ImageError
from sandbox.spec import (
    AGENT_DIR,
    AGENT_LAZY_MODULES,
    AGENT_PYCACHE,
    EGRESS_DIR,
    SANDBOX_GID,
    SANDBOX_UID,
    SKILLS_DIR,
    SYSTEM_CA_BUNDLE,
    WORKSPACE,
)

LAYOUT_VERSION = "7"
# Mount targets the runtimes bind over; they must exist in a read-only shared tree.
EMPTY_FILES = (
    f"{AGENT_DIR}/agent.py",
    *(f"{AGENT_DIR}/{name}" for name in AGENT_LAZY_MODULES),
    f"{AGENT_DIR}/interpreter.py",
    SYSTEM_CA_BUNDLE,
)
EMPTY_DIRS = (
    WORKSPACE, SKILLS_DIR, EGRESS_DIR, AGENT_PYCACHE, f"{AGENT_DIR}/sock", "/tmp", "/run", "/home"
)  # fmt: skip


def inside(root: Path, rel: str) -> Path:
    """`root`/`rel` for host-side code (as root) to write or delete: ImageError if any part
    of the way is a symlink, which code run in the tree (maintainer or npm scripts) could
    have planted to turn our write into one on the host's own files."""
    path = root
    for part in PurePosixPath(rel.lstrip("/")).parts:
        path = path / part
        if path.is_symlink():
            raise ImageError(
                f"/{rel.lstrip('/')} in the image is a symlink: not writing through it"
            )
    return path


def finish_tree(root: Path) -> None:
    """Sandbox user, mount targets, no resolver, no apt caches or lists."""
    for rel in ("etc/passwd", "etc/group", "etc/resolv.conf", "etc/hostname", "etc/hosts", "tmp"):
        inside(root, rel)
    for rel in (*EMPTY_DIRS, *EMPTY_FILES, "var/cache/apt/archives", "var/lib/apt/lists"):
        inside(root, rel)
    etc = root / "etc"
    passwd = (etc / "passwd").read_text()
    if f":{SANDBOX_UID}:" not in passwd:
        with open(etc / "passwd", "a") as f:
            f.write(f"sandbox:x:{SANDBOX_UID}:{SANDBOX_GID}:sandbox:/tmp:/bin/sh\n")
    group = (etc / "group").read_text()
    if f":{SANDBOX_GID}:" not in group:
        with open(etc / "group", "a") as f:
            f.write(f"sandbox:x:{SANDBOX_GID}:\n")
    (etc / "resolv.conf").unlink(missing_ok=True)
    (etc / "resolv.conf").write_text("")
    (etc / "hostname").write_text("sandbox\n")
    (etc / "hosts").write_text(
        "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    )
    for rel in EMPTY_DIRS:
        (root / rel.lstrip("/")).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    for rel in EMPTY_FILES:
        path = root / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.touch(mode=0o644)
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (root / cache).glob("*"):
            if entry.is_file() and entry.name not in ("lock",):
                entry.unlink()
