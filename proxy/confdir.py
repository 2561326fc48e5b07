"""Root's own file operations in the egress proxy's directory, none of which follows a link.

The directory (mitmproxy's confdir, `<state>/proxy/`) and every file in it belong to root
with the proxy user's group: the proxy reads, never writes, so it owns no name that root
acts on. Root works there anyway as if it were hostile ground (a directory of the previous
layout was the proxy's own): through a directory fd opened with O_NOFOLLOW, files opened
with O_NOFOLLOW, new contents written under a fresh O_EXCL name and renamed over the old one
(a hard link or a symlink in its place is replaced, never written through), ownership and
modes set on fds. Anything but a regular file where a file belongs is refused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

DIR_MODE = 0o750
MAX_FILE_BYTES = 1 << 20  # a CA key, a certificate, a CA bundle
# An owner may give others access through ACLs, which survive a chown: dropped, with the
# default ACL that new files would inherit.
ACL_XATTRS = ("system.posix_acl_access", "system.posix_acl_default")


class UnsafeConfdir(Exception):
    """Something in the proxy's directory is not what root may touch (a link, a fifo...)."""


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a fifo"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def open_dir(directory: Path, gid: int) -> int:
    """The directory's fd (made when missing), owned by this process's uid and `gid`, 0750,
    no ACL.

    The parent (the daemon's state dir) is root's own and is followed; `directory` itself
    must be a real directory, never a link. A directory of another owner (the previous
    layout gave it to the proxy's user) is taken back through its fd.
    """
    directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    parent = os.open(directory.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory.name, 0o700, dir_fd=parent)
        fd = _open_directory(directory.name, parent, directory)
    finally:
        os.close(parent)
    try:
        st = os.fstat(fd)
        if (st.st_uid, st.st_gid) != (os.geteuid(), gid):
            os.fchown(fd, os.geteuid(), gid)
        if stat.S_IMODE(st.st_mode) != DIR_MODE:
            os.fchmod(fd, DIR_MODE)
        _drop_acls(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_directory(name: str, dir_fd: int | None, shown: Path) -> int:
    """`name` (under `dir_fd`) opened as a directory; a link or anything else is refused."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        kind = _kind(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        raise UnsafeConfdir(f"{shown} is {kind}, not a directory; remove it") from None


def _drop_acls(fd: int) -> None:
    for name in ACL_XATTRS:
        try:
            os.removexattr(fd, name)
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, errno.EOPNOTSUPP):
                raise


def entry(dir_fd: int, name: str) -> os.stat_result | None:
    """lstat of `name` in the directory: None when missing, refused unless a regular file."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeConfdir(f"{name} in the proxy's directory is {_kind(st.st_mode)}; remove it")
    return st


def settled(st: os.stat_result | None, mode: int, gid: int) -> bool:
    """A file root made: ours, the proxy's group, `mode`, and no other name for its inode."""
    return (
        st is not None
        and stat.S_ISREG(st.st_mode)
        and (st.st_uid, st.st_gid) == (os.geteuid(), gid)
        and stat.S_IMODE(st.st_mode) == mode
        and st.st_nlink == 1
    )


def read_file(dir_fd: int, name: str) -> bytes:
    """The contents of a regular file in the directory (never through a link, never a fifo)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise UnsafeConfdir(f"{name} in the proxy's directory is a symlink; remove it") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeConfdir(f"{name} in the proxy's directory is {_kind(st.st_mode)}")
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise UnsafeConfdir(f"{name} in the proxy's directory is over {MAX_FILE_BYTES} bytes")
    return data


def write_file(dir_fd: int, name: str, data: bytes, mode: int, gid: int) -> None:
    """Replace `name` with a new file holding `data`, owned by this uid and `gid`, `mode`.

    Written under a fresh name (O_EXCL: nothing there to follow), then renamed over `name`:
    whatever `name` was (a symlink, a hard link to another file) is unlinked, not written.
    """
    tmp = f".{name}.{secrets.token_hex(8)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchown(f.fileno(), os.geteuid(), gid)
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)


def enter(directory: str, files: Mapping[str, bytes], mode: int, gid: int) -> None:
    """For the proxy process, still root: make `directory` (the daemon made it) the working
    directory, never through a link, and write `files` there."""
    dir_fd = _open_directory(directory, None, Path(directory))
    try:
        os.fchdir(dir_fd)
        for name, data in files.items():
            write_file(dir_fd, name, data, mode, gid)
    finally:
        os.close(dir_fd)
