"""Read and remove a sandbox's cgroup on cgroup v1, v2 and hybrid hosts.

runc creates the group from the OCI ``linux.cgroupsPath`` (e.g. ``/sandboxd/cntr_abc``), which
is relative to the root of every hierarchy. On a pure v2 host that is ``<root>/<path>``. On a v1
host runc 1.1 creates ``<root>/<hierarchy>/<path>`` in *every* mounted hierarchy, including the
named ``systemd`` one and, on hybrid hosts, the cgroup2 mount at ``<root>/unified``; so
``dirs()``/``remove()`` cover all of them, while counters come from ``memory`` and ``pids``.

A sandbox's group holds its agent; everything the agent starts runs in the sub-group
``work`` (see ``make_work_group``), whose memory limit is the sandbox's tier while the group's
own limit leaves the agent a reserve above it. An OOM in ``work`` picks its victim among
sandbox code only, so the agent survives whatever its tenant does with memory and priorities.

All I/O is small synchronous reads and writes of kernel pseudo-files; callers on an event loop
may want ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import signal
import time
from collections.abc import Sequence
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
    "WorkGroup",
    "children",
    "make_work_group",
]

WORK = "work"  # the sub-group of sandbox code (everything but the agent)
AGENT = "agent"  # v2 only: the agent's own leaf (a v2 group with sub-groups holds no process)

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
    # OOM kills outside the work group: of the agent (its death's cause, when it died).
    agent_oom_kills: int = 0


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
        return self._dirs(_check_path(cgroups_path))

    def _dirs(self, parts: Sequence[str]) -> list[Path]:
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
        self._kill_files: tuple[str, str, str] | None = None

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
                # v1 counts an OOM kill only in the group that ran out (v2's are hierarchical).
                "" if v2 else str(self._group("memory") / WORK / events),
            )
        oom_file, pids_file, work_file = self._kill_files
        oom_text = _read(oom_file)
        if oom_text is None:
            return None
        oom_kills = _key_value(oom_text, "oom_kill")
        if work_file:
            oom_kills += _read_key(work_file, "oom_kill")
        return KillCounters(oom_kills, _read_key(pids_file, "max"))

    def counters(self) -> CgroupCounters:
        mem, pids = self._group("memory"), self._group("pids")
        work = mem / WORK
        # The limit sandbox code runs under: the work group's where there is one.
        if self._layout.version is CgroupVersion.V2:
            oom_kills = _read_key(mem / "memory.events", "oom_kill")
            agent_oom_kills = _read_key(mem / AGENT / "memory.events", "oom_kill")
            memory_bytes = _read_uint(mem / "memory.current") or 0
            memory_limit = _read_uint(work / "memory.max") or _read_uint(mem / "memory.max")
        else:
            agent_oom_kills = _read_key(mem / "memory.oom_control", "oom_kill")
            oom_kills = agent_oom_kills + _read_key(work / "memory.oom_control", "oom_kill")
            memory_bytes = _read_uint(mem / "memory.usage_in_bytes") or 0
            memory_limit = _read_uint(work / "memory.limit_in_bytes") or _read_uint(
                mem / "memory.limit_in_bytes"
            )
            if memory_limit is not None and memory_limit >= _V1_UNLIMITED:
                memory_limit = None
        counters = CgroupCounters(
            oom_kills=oom_kills,
            memory_bytes=memory_bytes,
            memory_limit=memory_limit,
            pids_current=_read_uint(pids / "pids.current") or 0,
            pids_limit_hits=_read_key(pids / "pids.events", "max"),
            agent_oom_kills=agent_oom_kills,
        )
        # Checked last: a group removed mid-read shows up as missing files, not as zeros.
        if not self.exists():
            raise CgroupGone(f"cgroup {self.path} does not exist")
        return counters

    def pids(self) -> list[int]:
        """Every process of the group and its sub-groups, in any hierarchy (a group half made
        by a killed runc may hold its init where ``memory`` has no group yet)."""
        found: dict[int, None] = {}
        for top in self._layout.dirs(self.path):
            for dirpath, _, _ in os.walk(top):
                text = _read(Path(dirpath) / "cgroup.procs")
                numbers = (_parse_uint(line.strip()) for line in (text or "").splitlines())
                found.update(dict.fromkeys(pid for pid in numbers if pid))
        return list(found)

    def kill_all(self, timeout_s: float = 1.0) -> None:
        """SIGKILL every process of the group (every hierarchy) until none is left or
        `timeout_s` has passed: dying processes take a moment to leave, and a process may
        still be joining (a runc create that is running)."""
        deadline = time.monotonic() + timeout_s
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

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
    """Names of the immediate sub-groups of ``parent`` in any hierarchy; [] if it does not
    exist. Every v1 hierarchy is listed: a runc killed mid-create leaves its group in the
    hierarchies it got to (cpuset first), not necessarily in ``memory``."""
    parts = _check_path(parent, allow_root=True)
    return sorted({name for top in layout._dirs(parts) for name in _list_subdirs(top)})


@dataclass(frozen=True)
class WorkGroup:
    """How the agent puts what it starts into the work group, and the files it writes for
    that (open for writing; the kernel checks a migration against the opener's credentials,
    so the agent needs no access of its own to cgroupfs, which it cannot see anyway).

    - ``tasks`` (v1): fds of ``work/tasks`` and of the group's own ``tasks``; the spawning
      thread writes "0" to the first, spawns (the child is born in ``work``), then writes
      "0" to the second. No window in which sandbox code runs outside ``work``.
    - ``procs`` (v2, where a process's threads share one group): the fd of
      ``work/cgroup.procs``; the agent writes each child's pid right after spawning it.
    """

    mode: str
    fds: tuple[int, ...]

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


def _write(path: Path, value: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise CgroupError(f"cannot write {value!r} to {path}: {exc.strerror}") from exc


def _open_for_writing(path: Path) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CgroupError(f"cannot open {path}: {exc.strerror}") from exc


def make_work_group(layout: CgroupLayout, cgroups_path: str, memory_bytes: int) -> WorkGroup:
    """Make ``<group>/work`` with a memory (and memory+swap) limit of `memory_bytes`; on v2
    first move the group's processes (the agent) into ``<group>/agent``. Idempotent."""
    group = layout.root.joinpath(*_check_path(cgroups_path))
    if layout.version is CgroupVersion.V1:
        group = layout.root.joinpath("memory", *_check_path(cgroups_path))
        work = group / WORK
        work.mkdir(exist_ok=True)
        _write(work / "memory.limit_in_bytes", str(memory_bytes))  # memsw >= limit, always
        if (work / "memory.memsw.limit_in_bytes").exists():
            _write(work / "memory.memsw.limit_in_bytes", str(memory_bytes))
        fds = [_open_for_writing(work / "tasks")]
        try:
            fds.append(_open_for_writing(group / "tasks"))
        except CgroupError:
            os.close(fds[0])
            raise
        return WorkGroup("tasks", tuple(fds))
    agent, work = group / AGENT, group / WORK
    agent.mkdir(exist_ok=True)
    for pid in (_parse_uint(line) for line in (_read(group / "cgroup.procs") or "").split()):
        if pid:
            _write(agent / "cgroup.procs", str(pid))
    if "memory" not in (_read(group / "cgroup.subtree_control") or "").split():
        _write(group / "cgroup.subtree_control", "+memory")
    work.mkdir(exist_ok=True)
    _write(work / "memory.max", str(memory_bytes))
    if (work / "memory.swap.max").exists():
        _write(work / "memory.swap.max", "0")
    return WorkGroup("procs", (_open_for_writing(work / "cgroup.procs"),))
