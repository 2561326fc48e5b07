"""Workspaces from templates, on real loop devices: each one a private, capped ext4 of its own,
made without a mkfs per sandbox, on an unnamed file that names no sandbox, and gone without a
trace when destroyed."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.host import workspace
from tests.runtime.conftest import loop_devices_backed_by

pytestmark = pytest.mark.root

SIZE = 64 << 20
OWNER = (101_000, 101_000)


def _mount_line(mountpoint: Path) -> list[str]:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(mountpoint):
            return fields
    return []


def _fill(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size >> 20):
            f.write(b"\0" * (1 << 20))
            f.flush()
            os.fsync(f.fileno())


@pytest.fixture
def top(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    for point in sorted(tmp_path.rglob("mnt*"), reverse=True):
        workspace.destroy(point)
    _wait_released(tmp_path)


def _wait_released(top: Path) -> None:
    deadline = time.monotonic() + 5  # the last close releases the device, not synchronously
    while loop_devices_backed_by(top) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert loop_devices_backed_by(top) == []


def test_a_workspace_is_a_private_capped_ext4_owned_by_the_sandbox(top: Path) -> None:
    made = workspace.Workspaces(top / "templates")
    a, b = top / "mnt-a", top / "mnt-b"
    made.create(a, SIZE, OWNER)
    made.create(b, SIZE, OWNER)

    fields = _mount_line(a)
    assert fields, "not mounted"
    options = set(fields[5].split(","))
    assert {"nosuid", "nodev", "noatime"} <= options
    assert fields[fields.index("-") + 1] == "ext4"
    st = os.stat(a)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (*OWNER, 0o700)
    assert os.listdir(a) == []  # no lost+found
    # The image is an unnamed file: its loop device names only the templates' directory.
    backing = {
        Path(f"/sys/block/{d}/loop/backing_file").read_text().strip()
        for d in loop_devices_backed_by(top)
    }
    assert len(backing) == 2
    assert all(b.startswith(f"{top}/templates/#") and b.endswith(" (deleted)") for b in backing)
    assert sorted(os.listdir(top)) == ["mnt-a", "mnt-b", "templates"]
    # Two copies of one template are separate filesystems.
    (a / "only-in-a").write_text("x")
    assert not (b / "only-in-a").exists()
    assert os.stat(a).st_dev != os.stat(b).st_dev
    # The size is the cap.
    with pytest.raises(OSError, match="No space left") as exc:
        _fill(a / "big", SIZE + (1 << 20))
    assert exc.value.errno == errno.ENOSPC


def test_the_template_is_made_once_and_copies_stay_sparse(top: Path) -> None:
    made = workspace.Workspaces(top / "templates")
    template = made.template(SIZE)
    first = template.stat()
    assert (first.st_uid, first.st_mode & 0o777) == (0, 0o600)
    a = top / "mnt-a"
    made.create(a, SIZE, OWNER)
    assert made.template(SIZE) == template
    assert (
        template.stat().st_mtime_ns == first.st_mtime_ns and template.stat().st_ino == first.st_ino
    )
    (device,) = loop_devices_backed_by(top)
    assert int(Path(f"/sys/block/{device}/size").read_text()) * 512 == SIZE
    # Copies stay sparse: about the template's blocks, not SIZE.
    with open(template, "rb") as fin, open(top / "copy", "xb") as fout:
        workspace._copy_sparse(fin.fileno(), fout.fileno(), template)
    copy = (top / "copy").stat()
    assert copy.st_size == SIZE
    assert copy.st_blocks * 512 <= 4 * template.stat().st_blocks * 512 + (1 << 20)
    # A template removed behind the daemon's back is made again, not trusted blindly.
    template.unlink()
    b = top / "mnt-b"
    made.create(b, SIZE, OWNER)
    assert template.exists()


def test_destroy_releases_the_loop_device_even_when_busy_and_is_idempotent(top: Path) -> None:
    made = workspace.Workspaces(top / "templates")
    a = top / "mnt-a"
    made.create(a, SIZE, OWNER)
    assert loop_devices_backed_by(top) != []
    with open(a / "held-open", "w"):
        workspace.destroy(a)  # busy: detached lazily
        assert not _mount_line(a)
    workspace.destroy(a)
    _wait_released(top)
