"""Read and remove a sandbox's cgroup on cgroup v1, v2 and hybrid hosts.

runc creates the group from the OCI ``linux.cgroupsPath`` (e.g. ``/sandboxd/cntr_abc``), which
is relative to the root of every hierarchy. On a pure v2 host that is ``<root>/<path>``. On a v1
host runc 1.1 creates ``<root>/<hierarchy>/<path>`` in *every* mounted hierarchy, including the
named ``systemd`` one and, on hybrid hosts, the cgroup2 mount at ``<root>/unified``; so
``dirs()``/``remove()`` cover all of them, while counters come from ``memory`` and ``pids``.

All I/O is small synchronous reads of kernel pseudo-files; callers on an event loop may want
``asyncio.to_thread``. Nothing here writes to cgroupfs except ``rmdir``.
"""

from __future__ import annotations

import enum
import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "CgroupCounters",
    "CgroupError",
    "CgroupGone",
    "CgroupLayout",
    "CgroupReader",
    "CgroupVersion",
    "KillCounters",
    "children",
]

_V1_UNLIMITED = 2**62  # v1 reports "no limit" as PAGE_COUNTER_MAX * PAGE_SIZE (~2**63)
_MAX_READ = 1 << 20  # cgroup files are tiny; cap what we read from any of them
_MAX_DIGITS = 20  # enough for any u64
_MISSING = (errno.ENOENT, errno.ENODEV)  # ENODEV: group removed while we held the file open


class CgroupVersion(enum.Enum):
    V1 = "v1"
    V2 = "v2"


class CgroupError(Exception):
    """A cgroup hierarchy is unusable or a group could not be removed."""


class CgroupGone(CgroupError):
    """The sandbox's group does not exist (never created, or already removed)."""


class KillCounters(NamedTuple):
    oom_kills: int
    pids_limit_hits: int


@dataclass(frozen=True)
class CgroupCounters:
    oom_kills: int
    memory_bytes: int
    memory_limit: int | None
    pids_current: int
    pids_limit_hits: int


def _check_path(cgroups_path: str, *, allow_root: bool = False) -> tuple[str, ...]:
    """Return the components of an absolute, normalized group path; ValueError otherwise."""
    if not isinstance(cgroups_path, str) or not cgroups_path.startswith("/"):
        raise ValueError(f"cgroups path must be absolute: {cgroups_path!r}")
    if cgroups_path == "/":
        if allow_root:
            return ()
        raise ValueError("cgroups path must not be the hierarchy root")
    parts = tuple(cgroups_path[1:].split("/"))
    for part in parts:
        if part in ("", ".", "..") or "\0" in part:
            raise ValueError(f"cgroups path must be normalized, without '..': {cgroups_path!r}")
    return parts


def _parse_uint(text: str) -> int | None:
    if not text or len(text) > _MAX_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


def _read(path: Path | str) -> str | None:
    """Contents of a cgroup file, or None if it (or its group) does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in _MISSING:
            return None
        raise CgroupError(f"cannot open {path}: {exc.strerror}") from exc
    chunks: list[bytes] = []
    size = 0
    try:
        # Small reads: these files are a few bytes, and a 1 MiB buffer per read costs more
        # than the read itself.
        while size < _MAX_READ and (chunk := os.read(fd, 4096)):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        if exc.errno in _MISSING:
            return None
        raise CgroupError(f"cannot read {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    return b"".join(chunks)[:_MAX_READ].decode("ascii", errors="replace")


def _read_uint(path: Path) -> int | None:
    text = _read(path)
    return None if text is None else _parse_uint(text.strip())


def _read_key(path: Path | str, key: str) -> int:
    """Value of ``key`` in a flat-keyed file (``"key N"`` lines); 0 if missing or malformed."""
    return _key_value(_read(path) or "", key)


def _key_value(text: str, key: str) -> int:
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == key:
            value = _parse_uint(fields[1])
            if value is not None:
                return value
    return 0


def _list_subdirs(path: Path) -> list[str]:
    try:
        with os.scandir(path) as it:
            return sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
    except OSError as exc:
        if exc.errno in (*_MISSING, errno.ENOTDIR):
            return []
        raise CgroupError(f"cannot list {path}: {exc.strerror}") from exc


@dataclass(frozen=True)
class CgroupLayout:
    version: CgroupVersion
    root: Path

    @classmethod
    def detect(cls, root: Path = Path("/sys/fs/cgroup")) -> CgroupLayout:
        if (root / "cgroup.controllers").exists():
            return cls(CgroupVersion.V2, root)
        if (root / "memory").is_dir():
            return cls(CgroupVersion.V1, root)
        raise CgroupError(f"no usable cgroup hierarchy at {root}")

    def _hierarchy(self, controller: str) -> Path:
        """Mount dir holding ``controller`` (v1), or the single unified hierarchy (v2)."""
        return self.root if self.version is CgroupVersion.V2 else self.root / controller

    def dirs(self, cgroups_path: str) -> list[Path]:
        """Every directory that belongs to the group (whether or not it exists right now).

        v1: one per hierarchy mounted under ``root``: real directories only, so the
        ``cpu``/``cpuacct`` symlinks to a joined ``cpu,cpuacct`` mount are not repeated;
        ``systemd`` and the hybrid ``unified`` mount are included because runc creates the
        group there too.
        """
        parts = _check_path(cgroups_path)
        if self.version is CgroupVersion.V2:
            return [self.root.joinpath(*parts)]
        out: list[Path] = []
        seen: set[str] = set()
        for name in _list_subdirs(self.root):
            real = os.path.realpath(self.root / name)
            if real not in seen:
                seen.add(real)
                out.append(self.root.joinpath(name, *parts))
        return out

    def reader(self, cgroups_path: str) -> CgroupReader:
        return CgroupReader(self, cgroups_path)


class CgroupReader:
    """Counters and lifecycle of one sandbox's group; holds no open files."""

    __slots__ = ("_kill_files", "_layout", "_parts", "path")

    def __init__(self, layout: CgroupLayout, cgroups_path: str) -> None:
        self._parts = _check_path(cgroups_path)
        self._layout = layout
        self.path = cgroups_path
        self._kill_files: tuple[str, str] | None = None

    def _group(self, controller: str) -> Path:
        return self._layout._hierarchy(controller).joinpath(*self._parts)

    def exists(self) -> bool:
        return self._group("memory").is_dir()

    def kill_counters(self) -> KillCounters | None:
        """(oom kills, pids-limit hits) only: two small reads, cheap enough for every exec.
        None if the group is gone."""
        if self._kill_files is None:  # on the exec hot path: paths built once per reader
            v2 = self._layout.version is CgroupVersion.V2
            events = "memory.events" if v2 else "memory.oom_control"
            self._kill_files = (
                str(self._group("memory") / events),
                str(self._group("pids") / "pids.events"),
            )
        oom_file, pids_file = self._kill_files
        oom_text = _read(oom_file)
        if oom_text is None:
            return None
        return KillCounters(_key_value(oom_text, "oom_kill"), _read_key(pids_file, "max"))

    def counters(self) -> CgroupCounters:
        mem, pids = self._group("memory"), self._group("pids")
        if self._layout.version is CgroupVersion.V2:
            oom_kills = _read_key(mem / "memory.events", "oom_kill")
            memory_bytes = _read_uint(mem / "memory.current") or 0
            memory_limit = _read_uint(mem / "memory.max")  # "max" -> None
        else:
            oom_kills = _read_key(mem / "memory.oom_control", "oom_kill")
            memory_bytes = _read_uint(mem / "memory.usage_in_bytes") or 0
            memory_limit = _read_uint(mem / "memory.limit_in_bytes")
            if memory_limit is not None and memory_limit >= _V1_UNLIMITED:
                memory_limit = None
        counters = CgroupCounters(
            oom_kills=oom_kills,
            memory_bytes=memory_bytes,
            memory_limit=memory_limit,
            pids_current=_read_uint(pids / "pids.current") or 0,
            pids_limit_hits=_read_key(pids / "pids.events", "max"),
        )
        # Checked last: a group removed mid-read shows up as missing files, not as zeros.
        if not self.exists():
            raise CgroupGone(f"cgroup {self.path} does not exist")
        return counters

    def pids(self) -> list[int]:
        text = _read(self._group("memory") / "cgroup.procs")
        found = (_parse_uint(line.strip()) for line in (text or "").splitlines())
        return [pid for pid in found if pid]

    def remove(self) -> None:
        """rmdir the group (and any sub-groups, deepest first) in every hierarchy.

        Missing directories are fine. Tries every directory before raising CgroupError for the
        ones that could not be removed (EBUSY while processes, even dying ones, remain: kill
        them first, and retry briefly if needed).
        """
        failures: list[str] = []
        for top in self._layout.dirs(self.path):
            walk = os.walk(top, topdown=False, followlinks=False)
            for dirpath in [d for d, _, _ in walk] or [str(top)]:
                try:
                    os.rmdir(dirpath)
                except OSError as exc:
                    if exc.errno != errno.ENOENT:
                        failures.append(f"{dirpath}: {exc.strerror}")
        if failures:
            raise CgroupError(f"cannot remove cgroup {self.path}: " + "; ".join(failures))


def children(layout: CgroupLayout, parent: str) -> list[str]:
    """Names of the immediate sub-groups of ``parent``; [] if it does not exist."""
    parts = _check_path(parent, allow_root=True)
    return _list_subdirs(layout._hierarchy("memory").joinpath(*parts))
