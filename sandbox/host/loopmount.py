"""Loop-mount a filesystem image and unmount it with the kernel's own calls.

`mount -o loop` costs ~15 ms a call here (a process, fstab and mountinfo parsing, a scan of
every loop device, which grows with the number of sandboxes); the ioctls and mount(2) it
ends up making take under 1 ms. Blocking: call off the event loop.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
from pathlib import Path

from sandbox.errors import RuntimeFailure

LOOP_CONTROL = "/dev/loop-control"
LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A  # Linux 5.8+: fd, block size and flags in one ioctl
LO_FLAGS_AUTOCLEAR = 4  # the device detaches itself when its last user (the mount) goes
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_NOATIME = 1, 2, 4, 32, 1024
MS_BIND, MS_PRIVATE = 4096, 1 << 18
MNT_DETACH = 2
ATTACH_ATTEMPTS = 16  # another process may take the free device we were given

# struct loop_config { u32 fd; u32 block_size; struct loop_info64 info; u64 reserved[8]; }
# struct loop_info64 { u64 device, inode, rdevice, offset, sizelimit; u32 number,
#   encrypt_type, encrypt_key_size, flags; u8 file_name[64], crypt_name[64], key[32];
#   u64 init[2]; }
_LOOP_CONFIG = struct.Struct("=II QQQQQ IIII 64s64s32s QQ 64x")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong]
_libc.mount.argtypes += [ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _errno_failure(what: str, path: Path | str) -> RuntimeFailure:
    err = ctypes.get_errno()
    return RuntimeFailure(f"{what} {path}: {os.strerror(err)}")


def _attach(backing: int, image: str) -> tuple[str, int]:
    """A free loop device backed by the open file `backing` (autoclear), and an open fd that
    holds it; `image` names the file in errors."""
    ctl = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
    try:
        config = _LOOP_CONFIG.pack(
            backing, 0, 0, 0, 0, 0, 0, 0, 0, 0, LO_FLAGS_AUTOCLEAR, b"", b"", b"", 0, 0
        )
        for _ in range(ATTACH_ATTEMPTS):
            device = f"/dev/loop{fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)}"
            loop = os.open(device, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.ioctl(loop, LOOP_CONFIGURE, config)
            except OSError as exc:
                os.close(loop)
                if exc.errno == errno.EBUSY:
                    continue  # taken between GET_FREE and CONFIGURE
                raise RuntimeFailure(f"loop device for {image}: {exc.strerror}") from exc
            return device, loop
        raise RuntimeFailure(f"no free loop device for {image} after {ATTACH_ATTEMPTS} tries")
    finally:
        os.close(ctl)


def mount_image(image: Path | int, mountpoint: Path, fstype: str, options: str) -> None:
    """Mount `image` (a path, or an open read-write fd of the image file) nosuid,nodev,
    noatime with fs-specific `options`; on failure the loop device is released (autoclear
    happens when our fd closes without a mount)."""
    if isinstance(image, int):
        device, loop = _attach(image, f"fd {image}")
    else:
        backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
        try:
            device, loop = _attach(backing, str(image))
        finally:
            os.close(backing)
    try:
        flags = MS_NOSUID | MS_NODEV | MS_NOATIME
        data = options.encode()
        if _libc.mount(device.encode(), bytes(mountpoint), fstype.encode(), flags, data) != 0:
            raise _errno_failure("mount", mountpoint)
    finally:
        os.close(loop)  # the mount holds the device from here on


def unmount(mountpoint: Path) -> None:
    """Unmount; lazily (detached) if it is still busy. No error if nothing is mounted."""
    if _libc.umount2(bytes(mountpoint), 0) == 0:
        return
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOENT):  # not a mount point (any more)
        return
    if err == errno.EBUSY and _libc.umount2(bytes(mountpoint), MNT_DETACH) == 0:
        return
    raise _errno_failure("umount", mountpoint)


def bind_mount(source: Path, target: Path) -> None:
    """Bind `source` read-only at `target`, as a private mount (nothing propagates to or from
    peers). Read-only on the host too: a recursive delete of the tree above cannot reach
    through it into `source`."""
    if _libc.mount(bytes(source), bytes(target), None, MS_BIND, None) != 0:
        raise _errno_failure("bind mount at", target)
    for what, flags in (
        ("make read-only", MS_BIND | MS_REMOUNT | MS_RDONLY),
        ("make private", MS_PRIVATE),
    ):
        if _libc.mount(None, bytes(target), None, flags, None) != 0:
            error = _errno_failure(what, target)
            unmount(target)
            raise error


def mount_count(target: Path) -> int:
    """How many mounts are stacked at `target` (os.path.ismount misses a bind of a directory
    of the same filesystem)."""
    wanted = str(target).replace(" ", "\\040").encode()
    with open("/proc/self/mountinfo", "rb") as f:
        return sum(1 for line in f if line.split()[4] == wanted)
