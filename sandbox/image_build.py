"""`sandboxd image build`: a Debian root filesystem made with debootstrap, no registry.

The tree lands in <state_dir>/images/<name>/rootfs (see sandbox/images.py), finished for
sandboxes: the sandbox user (uid/gid 1000), every mount target pre-created, no resolver
configuration, apt's caches removed. Building is idempotent: an image whose recipe (suite,
mirror, packages, layout version) has not changed is left alone unless forced. The stamp
(image.json) is written last, so a build that dies half-way leaves no usable image.
Blocking, and slow (minutes: it downloads ~100 MB): a CLI command, never the daemon.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sandbox.images import STAMP, ImageError, image_dir
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

LAYOUT_VERSION = "5"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SUITE = "bookworm"
# What every image has (documented in README, "Images"): Python with pip and venv, TLS roots,
# the usual shell tools, and enough to fetch and unpack code.
BASE_PACKAGES = (
    "python3",
    "python3-pip",
    "python3-venv",
    "ca-certificates",
    "curl",
    "git",
    "coreutils",
    "procps",
    "findutils",
    "grep",
    "sed",
    "less",
    "file",
    "tar",
    "gzip",
    "bzip2",
    "xz-utils",
    "zip",
    "unzip",
)
# --with-data-libs: the code-interpreter staples, as Debian packages (no PyPI needed).
DATA_PACKAGES = ("python3-numpy", "python3-pandas", "python3-matplotlib", "fonts-dejavu-core")
TOOL_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
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


@dataclass(frozen=True)
class Recipe:
    suite: str = DEFAULT_SUITE
    mirror: str = DEFAULT_MIRROR
    packages: Sequence[str] = BASE_PACKAGES

    def digest(self) -> str:
        text = json.dumps([LAYOUT_VERSION, self.suite, self.mirror, sorted(self.packages)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def recipe(*, data_libs: bool, suite: str, mirror: str) -> Recipe:
    packages = BASE_PACKAGES + (DATA_PACKAGES if data_libs else ())
    return Recipe(suite, mirror, packages)


def host_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror the host's apt uses (one-line or deb822 sources), or the default."""
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for match in re.finditer(r"(?m)^(?:deb\s+(?:\[[^]]*\]\s+)?|URIs:\s*)(\S+)", text):
            uri = match.group(1).rstrip("/")
            if uri.startswith(("http://", "https://")) and not uri.endswith("-security"):
                return uri
    return DEFAULT_MIRROR


def build(
    state_dir: Path,
    name: str,
    wanted: Recipe,
    progress: Callable[[str], None],
    *,
    force: bool = False,
) -> tuple[Path, bool]:
    """Build image `name`; return (its rootfs, whether anything was built)."""
    if shutil.which("debootstrap", path=TOOL_ENV["PATH"]) is None:
        raise ImageError("debootstrap is not installed (apt-get install debootstrap)")
    base = image_dir(state_dir, name)
    stamp = base / STAMP
    if not force and stamp.is_file():
        with_recipe = json.loads(stamp.read_text()).get("recipe")
        if with_recipe == wanted.digest() and (base / "rootfs").is_dir():
            progress(f"image {name} is up to date ({base / 'rootfs'})")
            return base / "rootfs", False
    base.mkdir(parents=True, exist_ok=True)
    for stale in base.glob(".rootfs.*"):
        progress(f"removing a half-built tree {stale.name}")
        shutil.rmtree(stale, ignore_errors=True)
    tmp = base / f".rootfs.tmp-{os.getpid()}"
    started = time.monotonic()
    argv = [
        "debootstrap",
        "--variant=minbase",
        "--components=main",
        f"--include={','.join(wanted.packages)}",
        wanted.suite,
        str(tmp),
        wanted.mirror,
    ]
    progress(f"debootstrap {wanted.suite} from {wanted.mirror} ({len(wanted.packages)} packages)")
    _run_streaming(argv, progress)
    progress("finishing the tree for sandboxes")
    finish_tree(tmp)
    old = base / f".rootfs.old-{os.getpid()}"
    if (base / "rootfs").exists():
        os.rename(base / "rootfs", old)
    os.rename(tmp, base / "rootfs")
    shutil.rmtree(old, ignore_errors=True)
    meta = {
        "name": name,
        "build_id": f"{int(time.time())}-{wanted.digest()[:8]}",
        "recipe": wanted.digest(),
        "suite": wanted.suite,
        "mirror": wanted.mirror,
        "packages": list(wanted.packages),
        "built_at": int(time.time()),
    }
    tmp_stamp = base / f".{STAMP}.tmp"
    tmp_stamp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp_stamp, stamp)
    progress(f"image {name} built in {time.monotonic() - started:.0f} s: {base / 'rootfs'}")
    return base / "rootfs", True


def _run_streaming(argv: list[str], progress: Callable[[str], None]) -> None:
    tail: list[str] = []
    with subprocess.Popen(
        argv,
        env=TOOL_ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail = [*tail[-20:], line]
            if line.startswith(("I: Retrieving", "I: Validating", "I: Checking")):
                continue  # one line per package: too chatty
            if line.startswith(("I:", "W:", "E:")):
                progress(line)
    if proc.returncode != 0:
        raise ImageError(f"debootstrap failed ({proc.returncode}): " + " | ".join(tail[-5:]))


def finish_tree(root: Path) -> None:
    """Sandbox user, mount targets, no resolver, no apt caches."""
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
