"""Host uid/gid ranges, one per live sandbox, claimed in a registry every daemon on the host
shares.

A sandbox's processes, files and per-user kernel counters belong to its own range (the oci
backend maps the sandbox's ids 0..size-1 onto it; the docker backend runs the sandbox as the
range's first id + SANDBOX_UID). Two sandboxes never share a range, whichever daemon made
them: every claim is a file `<first id>-<size>` in one host-wide directory, made under an
exclusive lock after checking it overlaps no other claim, and it names its daemon instance and
sandbox. Claims outlive daemon restarts (the registry is on /run, which lives exactly as long
as sandboxes can: until the host reboots); a daemon removes only its own.

Blocking (file locks, directory scans): call off the event loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sandbox.errors import RuntimeFailure

HOST_REGISTRY = Path("/run/sandboxd/ids")
MIN_RANGE = 65536  # a sandbox uses ids 0 (root), 1000 (its user) and 65534 (nobody)
MAX_ID = 2**32 - 2  # (uid_t)-1 is "no id"
_CLAIM = re.compile(r"(\d{1,10})-(\d{1,10})")


class IdRangesExhausted(RuntimeFailure):
    """Every configured range is claimed (by this daemon or another one on the host)."""


@dataclass(frozen=True)
class IdRangeSettings:
    base: int = 0x7000_0000  # above systemd-nspawn's "container" ids, below 2**31
    size: int = MIN_RANGE
    count: int = 4094  # up to 0x7FFE0000, where systemd's "foreign" range begins
    registry: Path = HOST_REGISTRY

    def check(self) -> None:
        if self.size < MIN_RANGE or self.count < 1 or self.base < 1:
            raise ValueError(f"id ranges: size >= {MIN_RANGE}, count >= 1, base >= 1")
        if self.base + self.size * self.count - 1 > MAX_ID:
            raise ValueError("id ranges: base + size * count exceeds the 32-bit id space")

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.base, self.base + self.size * self.count, self.size))


@dataclass(frozen=True)
class Claim:
    first: int
    size: int
    instance: str
    sandbox_id: str


class IdRanges:
    """This daemon's view of the host-wide registry; `instance` names its claims."""

    def __init__(self, settings: IdRangeSettings, instance: str) -> None:
        settings.check()
        self._s = settings
        self._instance = instance
        self._mine: dict[str, int] = {}
        self._next = 0  # round robin: a released range is reused as late as possible

    def load(self) -> dict[str, int]:
        """Read this instance's claims (after a restart), merged into what it knows; sandbox
        id -> first host id. New claims then start after the highest of them."""
        self._ensure_registry()
        with self._locked():
            self._sweep_temporaries()
            found = {c.sandbox_id: c.first for c in self._scan() if c.instance == self._instance}
        self._mine.update(found)
        if found:
            self._next = (max(found.values()) - self._s.base) // self._s.size + 1
        return dict(self._mine)

    def lookup(self, sandbox_id: str) -> int | None:
        return self._mine.get(sandbox_id)

    def claim(self, sandbox_id: str) -> int:
        """The first host id of `sandbox_id`'s range, claimed now if it has none."""
        found = self._mine.get(sandbox_id)
        if found is not None:
            return found
        _check_token(sandbox_id)
        self._ensure_registry()
        with self._locked():
            # Claims on our grid are a set lookup; any other (another base or size) is
            # checked for overlap.
            on_grid, off_grid = set(), []
            for t_first, t_end in self._taken():
                aligned = (t_first - self._s.base) % self._s.size == 0
                if aligned and t_end - t_first == self._s.size:
                    on_grid.add(t_first)
                else:
                    off_grid.append((t_first, t_end))
            for i in range(self._s.count):
                slot = (self._next + i) % self._s.count
                first = self._s.base + slot * self._s.size
                end = first + self._s.size
                if first in on_grid or any(f < end and first < e for f, e in off_grid):
                    continue
                self._write_claim(f"{first}-{self._s.size}", sandbox_id)
                self._next = slot + 1
                self._mine[sandbox_id] = first
                return first
        raise IdRangesExhausted(
            f"all {self._s.count} uid ranges from {self._s.base} are in use on this host"
        )

    def release(self, sandbox_id: str) -> None:
        """Give the range back (the sandbox's processes are gone); no error if it had none."""
        first = self._mine.pop(sandbox_id, None)
        for claim in self._scan() if first is None else [self._read(first, self._s.size)]:
            if claim is not None and (claim.instance, claim.sandbox_id) == (
                self._instance,
                sandbox_id,
            ):
                with contextlib.suppress(FileNotFoundError):
                    (self._s.registry / f"{claim.first}-{claim.size}").unlink()

    def _write_claim(self, name: str, sandbox_id: str) -> None:
        """Whole or not at all: written to a temporary name, then linked into place (a crash
        never leaves a claim that names nobody)."""
        tmp = self._s.registry / f".tmp-{os.getpid()}-{name}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, f"{self._instance} {sandbox_id}\n".encode())
        finally:
            os.close(fd)
        try:
            os.link(tmp, self._s.registry / name)
        finally:
            tmp.unlink()

    def _sweep_temporaries(self) -> None:
        """Remove what a writer killed inside `_write_claim` left (called with the lock held:
        no claim is being written, so every temporary name is such a leftover)."""
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self._s.registry):
                if name.startswith(".tmp-"):
                    with contextlib.suppress(FileNotFoundError):
                        (self._s.registry / name).unlink()

    def _ensure_registry(self) -> None:
        self._s.registry.mkdir(mode=0o700, parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self._s.registry / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _taken(self) -> list[tuple[int, int]]:
        """[first, end) of every claim on the host, from the file names alone."""
        try:
            names = os.listdir(self._s.registry)
        except FileNotFoundError:
            return []
        found = (_CLAIM.fullmatch(name) for name in names)
        return [(int(m[1]), int(m[1]) + int(m[2])) for m in found if m]

    def _scan(self) -> list[Claim]:
        """Every readable claim with its owner (a half-written one is skipped: it is still
        taken, by `_taken`)."""
        claims = (self._read(first, end - first) for first, end in self._taken())
        return [c for c in claims if c is not None]

    def _read(self, first: int, size: int) -> Claim | None:
        try:
            text = (self._s.registry / f"{first}-{size}").read_text(errors="replace")
        except FileNotFoundError:
            return None
        fields = text.split()
        if len(fields) != 2:
            return None
        return Claim(first, size, fields[0], fields[1])


def _check_token(value: str) -> None:
    if not value or any(c.isspace() for c in value) or "/" in value:
        raise ValueError(f"bad sandbox id {value!r}")


class InstanceInUse(RuntimeFailure):
    """Another daemon (another state dir) runs as this instance."""


def lock_instance(settings: IdRangeSettings, instance: str, state_dir: Path) -> int:
    """Hold the instance id for this daemon's lifetime (the returned fd; closing it, or the
    process ending, lets go). Two state dirs configured with one `runtime.instance` would
    otherwise share runc state, cgroups and claims, and reconcile each other away."""
    directory = settings.registry.parent / "instances"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(directory / f"{instance}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        os.close(fd)
        raise InstanceInUse(
            f"instance {instance!r} is in use by the daemon of {holder or 'another state dir'}"
            "; give each state dir its own runtime.instance"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{state_dir.resolve()}\n".encode(), 0)
    return fd
