"""Root filesystems without a registry: named images, each a series of builds, under
<state_dir>/images/<name>/:

    current                       the current build's id (replaced atomically)
    builds/<build_id>/rootfs/     a finished tree
    builds/<build_id>/image.json  its metadata (build id, packages, versions...), written last

`sandboxd image build` (sandbox/image_build/) makes a build and then publishes it; a new
container starts on the current build and keeps the build it started with until it ends.
A build is in use while a runtime holds a *pin* on it (a shared flock on its image.json) or a
sandbox's dir names it (`<state>/sandboxes/*/root`, which outlives a daemon restart), so
`collect` (which removes builds neither current nor in use) and `remove` never take a tree
from under a running sandbox, whichever process (a daemon, the CLI) asks. The pseudo image
`host` is the host's own /usr bound into a generated skeleton (sandbox/host/rootfs.py); it is
never built.
An image of the older layout (`<name>/rootfs` + `<name>/image.json`) is read as one build.
Blocking: call off the event loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.errors import SandboxError

HOST = "host"
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
BUILD_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
STAMP = "image.json"
CURRENT = "current"
BUILDS = "builds"
ROOT_FILE = "root"  # in a sandbox's dir: "<image>@<build id>" (see sandbox/host/roots.py)


class ImageError(SandboxError):
    """An image is missing, half-built or malformed."""


class ImageInUse(ImageError):
    """A build of the image is pinned by a runtime (a sandbox runs on it)."""


class BuildRemoved(ImageError):
    """The build was collected before it could be pinned."""


@dataclass(frozen=True)
class BuiltImage:
    name: str
    build_id: str  # changes with every (re)build; the docker tag
    rootfs: Path  # resolved: runc refuses a rootfs path that passes through a symlink
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def stamp(self) -> Path:
        return self.rootfs.parent / STAMP


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def env_problem(env: object) -> str | None:
    """What is wrong with an image's `env` (image.json, a recipe's [env]), or None: names
    are identifiers, values strings without NUL (they reach every sandbox process)."""
    if not isinstance(env, dict):
        return 'env must be a table of NAME = "string"'
    for key, value in env.items():
        if not isinstance(key, str) or not ENV_NAME.fullmatch(key):
            return f"env name {key!r} is not an identifier (at most 128 characters)"
        if not isinstance(value, str) or "\0" in value:
            return f"env {key} must be a string without NUL"
    return None


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ImageError(f"bad image name {name!r}: lowercase letters, digits, '.', '_', '-'")
    if name == HOST:
        raise ImageError(f"{HOST!r} is the host's own /usr, not an image that can be built")
    return name


def image_dir(state_dir: Path, name: str) -> Path:
    return state_dir / "images" / check_name(name)


def build_dir(state_dir: Path, name: str, build_id: str) -> Path:
    if not BUILD_ID.fullmatch(build_id):
        raise ImageError(f"bad build id {build_id!r}")
    return image_dir(state_dir, name) / BUILDS / build_id


def _read(base: Path, name: str) -> BuiltImage:
    try:
        meta = json.loads((base / STAMP).read_text())
        build_id = str(meta["build_id"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ImageError(
            f"image {name!r} not found under {base} (build it: sandboxd image build {name})"
        ) from exc
    if not BUILD_ID.fullmatch(build_id) or not (base / "rootfs").is_dir():
        raise ImageError(f"image {name!r} at {base} is malformed")
    return BuiltImage(name, build_id, (base / "rootfs").resolve(), meta)


def current_id(state_dir: Path, name: str) -> str | None:
    """The current build's id (None: no build published; the legacy layout has none)."""
    try:
        build_id = (image_dir(state_dir, name) / CURRENT).read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ImageError(f"image {name!r}: {exc}") from exc
    return build_id or None


def is_built(state_dir: Path, name: str) -> bool:
    """Whether image `name` has a published build (cheap: no metadata is read)."""
    try:
        base = image_dir(state_dir, name)
    except ImageError:
        return False
    return (base / CURRENT).is_file() or (base / STAMP).is_file()


def load(state_dir: Path, name: str) -> BuiltImage:
    """The current build of image `name`."""
    build_id = current_id(state_dir, name)
    if build_id is None:
        return _read(image_dir(state_dir, name), name)  # the older layout, or an ImageError
    return load_build(state_dir, name, build_id)


def load_build(state_dir: Path, name: str, build_id: str) -> BuiltImage:
    """One build of image `name`, current or not (a sandbox's, after a restart)."""
    where = build_dir(state_dir, name, build_id)
    if not where.is_dir() and (image_dir(state_dir, name) / STAMP).is_file():
        where = image_dir(state_dir, name)  # the older layout: its one build
    if not where.is_dir():
        raise ImageError(f"image {name!r} has no build {build_id!r}")
    built = _read(where, name)
    if built.build_id != build_id:
        raise ImageError(f"image {name!r} has no build {build_id!r}")
    return built


def publish(state_dir: Path, name: str, build_id: str) -> None:
    """Make a finished build the current one (new containers start on it)."""
    _read(build_dir(state_dir, name, build_id), name)
    base = image_dir(state_dir, name)
    tmp = base / f".{CURRENT}.tmp-{os.getpid()}"
    tmp.write_text(build_id + "\n")
    os.replace(tmp, base / CURRENT)


def list_images(state_dir: Path) -> list[BuiltImage]:
    """Every image with a usable current build, by name (half-built or broken ones skipped)."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted((state_dir / "images").iterdir()):
            if entry.name.startswith(".") or not NAME.fullmatch(entry.name):
                continue
            with contextlib.suppress(ImageError):
                found.append(load(state_dir, entry.name))
    return found


class Pin:
    """A build held in use by this process: until release(), no collect or remove (in any
    process) deletes it."""

    def __init__(self, built: BuiltImage) -> None:
        self.built = built
        gone = f"image {built.name!r} build {built.build_id} was removed"
        try:
            fd = os.open(built.stamp, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise BuildRemoved(gone) from exc
        except OSError as exc:
            raise ImageError(f"image {built.name!r} build {built.build_id}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # a collector holds LOCK_EX only while it renames
            # A collector may have taken the build away between our open and our lock.
            if os.stat(built.stamp).st_ino != os.fstat(fd).st_ino:
                raise BuildRemoved(gone)
        except FileNotFoundError as exc:
            os.close(fd)
            raise BuildRemoved(gone) from exc
        except BaseException:
            os.close(fd)
            raise
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def _unpinned(stamp: Path) -> Iterator[bool]:
    """Hold an exclusive lock on a build's stamp if nobody pins it; yields whether we do."""
    try:
        fd = os.open(stamp, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield True  # no stamp: a tree nobody can pin
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


LOCK = ".build.lock"  # in images/<name>/: held while the image is built, removed or collected


@contextlib.contextmanager
def locked(
    state_dir: Path, name: str, waiting: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold image `name`'s lock (a flock: builds, `remove` and `collect` exclude each other,
    whichever process runs them). If another holds it: with `waiting`, say so and wait;
    without, ImageError at once."""
    base = image_dir(state_dir, name)
    if not base.is_dir():
        raise ImageError(f"image {name!r} not found")
    fd = os.open(base / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is None:
                raise ImageError(f"a build of image {name!r} is running") from None
            waiting(f"another build of image {name} is running: waiting for it to end")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` in this process's mount namespace."""
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo") as f:
        for row in f:
            point = row.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def discard(path: Path) -> None:
    """Delete a tree, never through a mount (a build's /dev, a runtime's view): renamed away
    first (atomic: nothing sees a half-deleted tree), then removed."""
    if not path.exists():
        return
    leaked = mounts_under(path)
    if leaked:
        raise ImageError(f"not removing {path}: mounts under it: {', '.join(leaked)}")
    trash = path.parent / f".trash-{path.name}-{os.getpid()}"
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def referenced(state_dir: Path, name: str) -> set[str]:
    """The builds of `name` that sandboxes' dirs name."""
    found = set()
    for path in (state_dir / "sandboxes").glob(f"*/{ROOT_FILE}"):
        with contextlib.suppress(OSError):
            image, _, build_id = path.read_text().strip().partition("@")
            if image == name:
                found.add(build_id)
    return found


def collect(state_dir: Path, name: str, *, holding_lock: bool = False) -> list[str]:
    """Delete the builds of `name` that are neither current nor in use; their ids. Under the
    image's lock (`holding_lock`: the caller holds it): a build being published is never
    taken for an old one; while a build runs, nothing is collected (it collects itself)."""
    if not holding_lock:
        try:
            with locked(state_dir, name):
                return collect(state_dir, name, holding_lock=True)
        except ImageError:
            return []  # a build runs (or the image is gone)
    builds = image_dir(state_dir, name) / BUILDS
    keep = {current_id(state_dir, name), *referenced(state_dir, name)}
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(builds.iterdir()):
            if entry.name.startswith(".trash-"):
                shutil.rmtree(entry, ignore_errors=True)  # a collector that died half-way
                continue
            if entry.name.startswith(".") or entry.name in keep:
                continue
            with _unpinned(entry / STAMP) as free:
                if free:
                    discard(entry)
                    removed.append(entry.name)
    return removed


def remove(state_dir: Path, name: str) -> None:
    """Delete image `name` and every build of it; ImageInUse if a runtime pins one,
    ImageError while a build of it runs."""
    with locked(state_dir, name):
        _remove(state_dir, name)


def _remove(state_dir: Path, name: str) -> None:
    base = image_dir(state_dir, name)
    if referenced(state_dir, name):
        raise ImageInUse(f"image {name!r} is in use by sandboxes")
    with contextlib.ExitStack() as stack:
        stamps = [base / STAMP]
        with contextlib.suppress(FileNotFoundError):
            stamps += [b / STAMP for b in (base / BUILDS).iterdir() if not b.name.startswith(".")]
        for path in stamps:
            if not stack.enter_context(_unpinned(path)):
                raise ImageInUse(f"image {name!r} is in use by running sandboxes")
        discard(base)


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
