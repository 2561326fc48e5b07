"""Per-sandbox workspace: a sparse ext4 image, loop-mounted nosuid,nodev on the host.

Its size is the workspace cap (ENOSPC inside the sandbox), its inode table caps file counts,
and the host-side mount is bound into the sandbox at /mnt/data.

mkfs runs once per size, into a template; each sandbox gets a copy of the template's few
hundred KiB of metadata (a reflink where the filesystem can), not a mkfs of its own, and its
root is then given to the sandbox's own ids. The copy is an unnamed file (O_TMPFILE) that
only its loop device holds: nothing on the host or in /sys/block/loop*/loop/backing_file
names a sandbox, and the space returns when the workspace is unmounted, even if the daemon
is not there to delete anything. Blocking: call off the loop.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
import subprocess
import tempfile
import threading
from pathlib import Path

from sandbox.errors import RuntimeFailure
from sandbox.host import loopmount

TOOL_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
FICLONE = 0x40049409
# The image is thrown away with its sandbox: nothing to gain from initialising the inode
# tables in the background (uninit_bg makes the kernel do a group when it is first used).
MOUNT_OPTIONS = "noinit_itable"
EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
EXT4_GOING_FLAGS_NOLOGFLUSH = 2
LOOP_MAJOR = 7


def _run(argv: list[str]) -> None:
    proc = subprocess.run(
        argv, env=TOOL_ENV, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip()[-300:]
        raise RuntimeFailure(f"{argv[0]} failed ({proc.returncode}): {detail}")


def is_mounted(mountpoint: Path) -> bool:
    return os.path.ismount(mountpoint)


class Workspaces:
    """Makes and removes workspaces from per-size templates under `templates`."""

    def __init__(self, templates: Path) -> None:
        self._dir = templates
        self._lock = threading.Lock()
        self._made: dict[int, Path] = {}

    def template(self, size_bytes: int) -> Path:
        """The formatted template for this size, made on first use (and again at each start
        of the daemon, so it always comes from this host's mkfs)."""
        with self._lock:
            found = self._made.get(size_bytes)
            if found is None or not found.exists():
                self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                found = self._dir / f"workspace-{size_bytes}.img"
                _make_template(found, size_bytes)
                self._made[size_bytes] = found
            return found

    def create(self, mountpoint: Path, size_bytes: int, owner: tuple[int, int]) -> None:
        """Make and mount the workspace, its root 0700 to `owner`; on failure nothing is left
        mounted and no file remains."""
        template = self.template(size_bytes)
        fd = os.open(self._dir, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            with open(template, "rb") as fin:
                _copy_sparse(fin.fileno(), fd, template)
            mountpoint.mkdir(mode=0o700, exist_ok=True)
            loopmount.mount_image(fd, mountpoint, "ext4", MOUNT_OPTIONS)
        finally:
            os.close(fd)  # the loop device holds the file from here on
        try:
            os.chown(mountpoint, *owner)
            mountpoint.chmod(0o700)
        except OSError:
            loopmount.unmount(mountpoint)
            raise


def _make_template(path: Path, size_bytes: int) -> None:
    """mkfs into a temporary file, tidy the root (no lost+found), then rename."""
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".img", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.ftruncate(fd, size_bytes)
        os.close(fd)
        fd = -1
        options = "lazy_itable_init=1,root_owner=0:0"
        _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", "-E", options, tmp_name])
        with tempfile.TemporaryDirectory(dir=path.parent) as mnt:
            loopmount.mount_image(tmp, Path(mnt), "ext4", MOUNT_OPTIONS)
            try:
                with contextlib.suppress(OSError):
                    (Path(mnt) / "lost+found").rmdir()
                Path(mnt).chmod(0o700)
            finally:
                loopmount.unmount(Path(mnt))
        tmp.rename(path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise


def _copy_sparse(fin: int, fout: int, src: Path) -> None:
    """Copy the file `fin` into the empty file `fout`: a reflink where supported, else only
    its data extents."""
    try:
        fcntl.ioctl(fout, FICLONE, fin)
        return
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY):
            raise
    size = os.fstat(fin).st_size
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fin, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                break
            raise
        end = os.lseek(fin, start, os.SEEK_HOLE)
        position = start
        while position < end:
            copied = os.copy_file_range(fin, fout, end - position, position, position)
            if copied == 0:
                raise RuntimeFailure(f"short copy of {src}")
            position += copied
        offset = end
    os.ftruncate(fout, size)


def destroy(mountpoint: Path) -> None:
    """Unmount (lazily if still busy): the unnamed image goes with its loop device."""
    _drop_dirty_data(mountpoint)
    loopmount.unmount(mountpoint)


def _drop_dirty_data(mountpoint: Path) -> None:
    """Shut the workspace's filesystem down (as `xfs_io -c shutdown` does), so an unmount
    drops its dirty pages instead of writing them through the loop device into an image that
    is freed next: a workspace with 512 MiB just written otherwise costs its destroy about a
    second of copying, which creates of other sandboxes wait behind (loop devices, disk).
    Only a loop-backed filesystem mounted at `mountpoint` is touched, never the one it is on."""
    try:
        fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return  # gone already
    try:
        dev = os.fstat(fd).st_dev
        if os.major(dev) != LOOP_MAJOR or dev == os.stat(mountpoint.parent).st_dev:
            return
        with contextlib.suppress(OSError):  # not ext4, or an older kernel: a plain unmount
            fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("=I", EXT4_GOING_FLAGS_NOLOGFLUSH))
    finally:
        os.close(fd)
