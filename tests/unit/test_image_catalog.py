"""sandbox/images.py: builds, the current pointer, pins across processes, collect and remove."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox import images


def _make_build(state: Path, name: str, build_id: str, *, publish: bool = True) -> Path:
    where = images.build_dir(state, name, build_id)
    (where / "rootfs" / "usr").mkdir(parents=True)
    (where / images.STAMP).write_text(json.dumps({"name": name, "build_id": build_id}))
    if publish:
        images.publish(state, name, build_id)
    return where


def test_current_build_and_older_builds_load(tmp_path: Path) -> None:
    _make_build(tmp_path, "data", "b1")
    _make_build(tmp_path, "data", "b2")
    assert images.load(tmp_path, "data").build_id == "b2"
    old = images.load_build(tmp_path, "data", "b1")
    assert old.build_id == "b1" and old.rootfs.is_dir()
    with pytest.raises(images.ImageError, match="no build"):
        images.load_build(tmp_path, "data", "b3")
    assert [i.name for i in images.list_images(tmp_path)] == ["data"]


def test_unbuilt_half_built_and_bad_names(tmp_path: Path) -> None:
    with pytest.raises(images.ImageError, match="not found"):
        images.load(tmp_path, "nothing")
    _make_build(tmp_path, "half", "b1", publish=False)
    (images.build_dir(tmp_path, "half", "b1") / images.STAMP).unlink()
    with pytest.raises(images.ImageError):
        images.publish(tmp_path, "half", "b1")  # no stamp: not finished
    assert images.list_images(tmp_path) == []
    for bad in ("Host", "../x", "host", ""):
        with pytest.raises(images.ImageError):
            images.check_name(bad)
    with pytest.raises(images.ImageError, match="bad build id"):
        images.build_dir(tmp_path, "data", "../../etc")


def test_the_older_layout_is_one_build(tmp_path: Path) -> None:
    base = tmp_path / "images" / "old"
    (base / "rootfs").mkdir(parents=True)
    (base / images.STAMP).write_text(json.dumps({"build_id": "123-abc"}))
    assert images.load(tmp_path, "old").build_id == "123-abc"
    assert images.load_build(tmp_path, "old", "123-abc").rootfs == (base / "rootfs").resolve()


def test_collect_keeps_current_and_pinned_builds(tmp_path: Path) -> None:
    _make_build(tmp_path, "data", "b1")
    _make_build(tmp_path, "data", "b2")
    _make_build(tmp_path, "data", "b3")
    pin = images.Pin(images.load_build(tmp_path, "data", "b1"))
    try:
        assert images.collect(tmp_path, "data") == ["b2"]
        assert images.load_build(tmp_path, "data", "b1").rootfs.is_dir()
    finally:
        pin.release()
    assert images.collect(tmp_path, "data") == ["b1"]
    assert sorted(p.name for p in (tmp_path / "images/data/builds").iterdir()) == ["b3"]


def test_a_pin_in_another_process_holds_too(tmp_path: Path) -> None:
    """The daemon pins; the CLI collects and removes: the lock must be seen across processes."""
    _make_build(tmp_path, "data", "b1")
    _make_build(tmp_path, "data", "b2")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from sandbox import images;"
            f"p = images.Pin(images.load_build(Path({str(tmp_path)!r}), 'data', 'b1'));"
            "print('pinned', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "pinned"
        assert images.collect(tmp_path, "data") == []
        with pytest.raises(images.ImageInUse):
            images.remove(tmp_path, "data")
        assert images.load(tmp_path, "data").build_id == "b2"
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
        assert holder.stdout is not None
        holder.stdout.close()
    images.remove(tmp_path, "data")
    assert not (tmp_path / "images" / "data").exists()
    with pytest.raises(images.ImageError, match="not found"):
        images.remove(tmp_path, "data")


def test_a_collected_build_cannot_be_pinned(tmp_path: Path) -> None:
    _make_build(tmp_path, "data", "b1")
    old = images.load(tmp_path, "data")
    _make_build(tmp_path, "data", "b2")
    assert images.collect(tmp_path, "data") == ["b1"]
    with pytest.raises(images.ImageError, match="removed"):
        images.Pin(old)


def test_a_build_named_by_a_sandbox_dir_is_in_use(tmp_path: Path) -> None:
    """A sandbox outlives its daemon (restart): its dir, not a process, keeps its build."""
    _make_build(tmp_path, "data", "b1")
    _make_build(tmp_path, "data", "b2")
    sdir = tmp_path / "sandboxes" / "100000"
    sdir.mkdir(parents=True)
    (sdir / images.ROOT_FILE).write_text("data@b1\n")
    assert images.collect(tmp_path, "data") == []
    with pytest.raises(images.ImageInUse):
        images.remove(tmp_path, "data")
    (sdir / images.ROOT_FILE).unlink()
    assert images.collect(tmp_path, "data") == ["b1"]


def test_nothing_is_collected_or_removed_while_a_build_holds_the_lock(tmp_path: Path) -> None:
    """A build renames its tree in, then publishes it: a daemon collecting in between must
    not take the new build for an old one."""
    _make_build(tmp_path, "data", "b1")
    _make_build(tmp_path, "data", "b2")
    with images.locked(tmp_path, "data"):
        assert images.collect(tmp_path, "data") == []
        with pytest.raises(images.ImageError, match="build of image 'data' is running"):
            images.remove(tmp_path, "data")
        assert images.collect(tmp_path, "data", holding_lock=True) == ["b1"]
    images.remove(tmp_path, "data")
