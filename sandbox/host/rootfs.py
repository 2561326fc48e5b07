"""The shared read-only root: a skeleton directory whose system trees are host binds.

Nothing from /home, /root, /var or host secrets in /etc reaches a sandbox: /etc is generated
here (plus a few public host files), and only the directories in SYSTEM_TREES are bound.
Every mount target exists in the skeleton, so a runtime never creates paths inside it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from sandbox.spec import (
    AGENT_DIR,
    AGENT_LAZY_MODULES,
    AGENT_PYCACHE,
    EGRESS_DIR,
    SANDBOX_GID,
    SANDBOX_UID,
    WORKSPACE,
)

SKELETON_VERSION = "8"
# Host trees bound read-only; a host top-level symlink (merged /usr) is mirrored instead.
SYSTEM_TREES = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
# Public, non-secret host /etc entries bound read-only when present (fontconfig's and, on
# Debian, matplotlib's default configuration included).
HOST_ETC_BINDS = ("ssl", "ca-certificates", "alternatives", "mime.types", "fonts", "matplotlibrc")
HOST_ETC_COPIES = ("ld.so.cache", "os-release", "debian_version", "localtime")
# Bind-mount targets for the agent, its lazily imported modules and the code interpreter.
AGENT_SCRIPTS = ("agent.py", *AGENT_LAZY_MODULES, "interpreter.py")
EMPTY_DIRS = ("proc", "sys", "dev", "tmp", "run", "var/tmp", "home", "mnt/skills")

GENERATED_ETC = {
    "passwd": (
        "root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"sandbox:x:{SANDBOX_UID}:{SANDBOX_GID}:sandbox:/tmp:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    ),
    "group": f"root:x:0:\nsandbox:x:{SANDBOX_GID}:\nnogroup:x:65534:\n",
    "hosts": "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    "hostname": "sandbox\n",
    "resolv.conf": "",
    "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
}


def missing_agent_targets(root: Path) -> list[str]:
    """The agent's mount targets `root` lacks: an image built before they were added, which
    cannot start sandboxes (runc cannot make them in a shared tree it does not own)."""
    agent_dir = root / AGENT_DIR.lstrip("/")
    return [f"{AGENT_DIR}/{name}" for name in AGENT_SCRIPTS if not (agent_dir / name).is_file()]


def host_binds(host_root: Path = Path("/")) -> list[tuple[str, str]]:
    """(host source, sandbox destination) pairs to bind read-only into every sandbox."""
    binds: list[tuple[str, str]] = []
    for name in SYSTEM_TREES:
        src = host_root / name
        if src.is_dir() and not src.is_symlink():
            binds.append((str(src), f"/{name}"))
    for name in HOST_ETC_BINDS:
        src = host_root / "etc" / name
        if src.exists() and not src.is_symlink():
            binds.append((str(src), f"/etc/{name}"))
    return binds


def _fingerprint(host_root: Path) -> str:
    h = hashlib.sha256(SKELETON_VERSION.encode())
    for src, dst in host_binds(host_root):
        h.update(f"{src}>{dst};".encode())
    for name in SYSTEM_TREES:
        link = host_root / name
        if link.is_symlink():
            h.update(f"{name}->{os.readlink(link)};".encode())
    return h.hexdigest()[:16]


def ensure_skeleton(base: Path, host_root: Path = Path("/")) -> Path:
    """Build (once, atomically) the skeleton for this host layout; return its path.

    Blocking: call it off the event loop.
    """
    target = base / f"rootfs-{_fingerprint(host_root)}"
    if target.is_dir():
        return target
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o755)
    for name in SYSTEM_TREES:
        src = host_root / name
        if src.is_symlink():
            (tmp / name).symlink_to(os.readlink(src))
        elif src.is_dir():
            (tmp / name).mkdir()
    etc = tmp / "etc"
    etc.mkdir()
    for name, content in GENERATED_ETC.items():
        (etc / name).write_text(content)
    for name in HOST_ETC_COPIES:
        src = host_root / "etc" / name
        if src.is_symlink():
            (etc / name).symlink_to(os.readlink(src))
        elif src.is_file():
            shutil.copyfile(src, etc / name)
    for src_s, dst in host_binds(host_root):
        if dst.startswith("/etc/"):
            path = tmp / dst.lstrip("/")
            if Path(src_s).is_dir():
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.touch()
    for name in EMPTY_DIRS:
        (tmp / name).mkdir(parents=True, exist_ok=True)
    (tmp / WORKSPACE.lstrip("/")).mkdir(parents=True, exist_ok=True)
    (tmp / AGENT_DIR.lstrip("/")).mkdir()
    (tmp / EGRESS_DIR.lstrip("/")).mkdir()
    (tmp / AGENT_PYCACHE.lstrip("/")).mkdir()
    for script in AGENT_SCRIPTS:
        (tmp / AGENT_DIR.lstrip("/") / script).touch()
    for path in [tmp, *tmp.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & ~0o022)
    (tmp / "tmp").chmod(0o1777)
    os.rename(tmp, target)
    return target
