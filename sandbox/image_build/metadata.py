"""What a built tree contains, read from the tree itself (no chroot): the Debian packages
(dpkg's status file), the Python distributions its python3 sees, the npm packages installed
globally, its size on disk, and what pinned the package set (the mirror's Release date)."""

from __future__ import annotations

import json
import os
import re
import stat
from email.parser import HeaderParser
from importlib import metadata as importlib_metadata
from pathlib import Path

# Where a Debian python3 finds distributions, and where our venv puts them (stages.VENV).
PYTHON_DIRS = (
    "opt/venv/lib/python3*/site-packages",  # first: the venv's wheels win over Debian's
    "usr/local/lib/python3*/dist-packages",
    "usr/lib/python3/dist-packages",
    "usr/lib/python3*",  # the stdlib's own (pip, setuptools when bundled)
)
NPM_GLOBAL = "usr/local/lib/node_modules"


def debian_packages(root: Path) -> list[str]:
    """`name=version` of every package dpkg has installed in the tree, sorted."""
    text = (root / "var/lib/dpkg/status").read_text(errors="replace")
    found = []
    for stanza in text.split("\n\n"):
        fields = HeaderParser().parsestr(stanza)
        name, version, status = fields["Package"], fields["Version"], fields["Status"] or ""
        if name and version and status.split()[-1:] == ["installed"]:
            found.append(f"{name}={version}")
    return sorted(found)


def python_packages(root: Path) -> list[str]:
    """`name==version` of every distribution the image's python3 can import, sorted by name
    (a distribution in the venv shadows Debian's of the same name, as it does at run time)."""
    seen: dict[str, str] = {}
    for pattern in PYTHON_DIRS:
        for directory in sorted(root.glob(pattern)):
            if not directory.is_dir():
                continue
            for dist in importlib_metadata.distributions(path=[str(directory)]):
                name = dist.metadata["Name"] if dist.metadata else None
                if not name or not dist.version:
                    continue
                key = re.sub(r"[-_.]+", "-", name).lower()
                seen.setdefault(key, f"{name}=={dist.version}")
    return [seen[k] for k in sorted(seen)]


def npm_packages(root: Path) -> list[str]:
    """`name@version` of the packages installed with `npm install -g`, sorted."""
    base = root / NPM_GLOBAL
    if not base.is_dir():
        return []
    dirs = []
    for entry in sorted(base.iterdir()):
        if entry.name.startswith("@"):
            dirs += sorted(p for p in entry.iterdir() if p.is_dir())
        elif entry.is_dir() and not entry.name.startswith("."):
            dirs.append(entry)
    found = []
    for pkg in dirs:
        try:
            meta = json.loads((pkg / "package.json").read_text())
            found.append(f"{meta['name']}@{meta['version']}")
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def size_bytes(root: Path) -> int:
    """The tree's disk usage like `du -s`: allocated blocks, each hard-linked file once."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for directory, dirnames, filenames in os.walk(root):
        # Symlinks to directories are listed in dirnames (not followed): count them here.
        links = [n for n in dirnames if os.path.islink(os.path.join(directory, n))]
        for name in (".", *filenames, *links):
            st = os.lstat(os.path.join(directory, name))
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def release_date(root: Path, suite: str) -> str:
    """The `Date:` of the suite's Release file apt used (what pinned the package set)."""
    lists = root / "var/lib/apt/lists"
    for path in sorted(lists.glob(f"*_dists_{suite}_*Release")):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("Date:"):
                return line.partition(":")[2].strip()
    return ""
