"""sandbox/host/roots.py: which build a sandbox gets, what stays pinned, what is collected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandbox import images
from sandbox.host.rootfs import AGENT_SCRIPTS
from sandbox.host.roots import Root, Roots, record
from sandbox.spec import AGENT_DIR


def _build(state: Path, name: str, build_id: str, env: object = None) -> None:
    where = images.build_dir(state, name, build_id)
    agent_dir = where / "rootfs" / AGENT_DIR.lstrip("/")
    agent_dir.mkdir(parents=True)
    for script in AGENT_SCRIPTS:
        (agent_dir / script).touch()
    meta = {"name": name, "build_id": build_id, "env": env or {"PATH": "/opt/venv/bin:/usr/bin"}}
    (where / images.STAMP).write_text(json.dumps(meta))
    images.publish(state, name, build_id)


class _Views:
    def __init__(self) -> None:
        self.up: list[str] = []
        self.down: list[str] = []

    def roots(self, state: Path) -> Roots:
        return Roots(state, lambda r: self.up.append(r.key), lambda r: self.down.append(r.key))


def _sandbox_dir(state: Path, sid: str, root: Root) -> Path:
    sdir = state / "sandboxes" / sid
    sdir.mkdir(parents=True)
    record(sdir, root)
    return sdir


def test_a_rebuild_leaves_running_sandboxes_on_their_build(tmp_path: Path) -> None:
    views = _Views()
    roots = views.roots(tmp_path)
    _build(tmp_path, "data", "b1")
    first = roots.acquire("s1", "data")
    sdir = _sandbox_dir(tmp_path, "s1", first)
    assert (first.build_id, dict(first.env)) == ("b1", {"PATH": "/opt/venv/bin:/usr/bin"})
    _build(tmp_path, "data", "b2")
    second = roots.acquire("s2", "data")
    assert second.build_id == "b2" and views.up == ["data@b1", "data@b2"]
    # A pooled sandbox on b1 is not handed out any more (daemon/pool.py asks this).
    assert not roots.on_current_build("s1") and roots.on_current_build("s2")
    assert not roots.on_current_build("unknown")
    assert images.collect(tmp_path, "data") == []  # b1: pinned, and named by s1's dir
    assert first.tree.is_dir()
    (sdir / "root").unlink()
    roots.release("s1")  # s1 ended: b1 is not current, nobody uses it
    assert views.down == ["data@b1"]
    assert not first.tree.exists() and second.tree.is_dir()
    roots.release("s2")  # current: kept
    assert views.down == ["data@b1"] and second.tree.is_dir()
    roots.close()


def test_a_restarted_runtime_holds_what_its_sandboxes_run_on(tmp_path: Path) -> None:
    _build(tmp_path, "data", "b1")
    before = Roots(tmp_path)
    sdir = _sandbox_dir(tmp_path, "s1", before.acquire("s1", "data"))
    before.close()  # the daemon stops; the sandbox runs on
    _build(tmp_path, "data", "b2")
    after = Roots(tmp_path)
    adopted = after.adopt("s1", sdir)
    assert adopted is not None and adopted.build_id == "b1"
    assert images.collect(tmp_path, "data") == []
    assert after.adopt("s9", tmp_path / "nowhere") is None  # made before per-sandbox roots
    after.close()


def test_unbuilt_and_malformed_images_are_refused(tmp_path: Path) -> None:
    roots = Roots(tmp_path)
    with pytest.raises(images.ImageError, match="not found"):
        roots.acquire("s1", "data")
    _build(tmp_path, "bad", "b1", env={"PATH=x": "y"})
    with pytest.raises(images.ImageError, match="env is malformed"):
        roots.acquire("s1", "bad")
    _build(tmp_path, "old", "b1")
    agent = images.load(tmp_path, "old").rootfs / AGENT_DIR.lstrip("/") / AGENT_SCRIPTS[-1]
    agent.unlink()
    with pytest.raises(images.ImageError, match="no mount point"):
        roots.prepare("old")
    roots.close()


def test_a_build_collected_before_its_pin_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CLI build may publish and collect between a create's read of `current` and its pin."""
    _build(tmp_path, "data", "b1")
    stale = images.load(tmp_path, "data")
    _build(tmp_path, "data", "b2")
    assert images.collect(tmp_path, "data") == ["b1"]
    real = images.load
    reads = iter([stale])
    monkeypatch.setattr(images, "load", lambda *a: next(reads, None) or real(*a))
    roots = Roots(tmp_path)
    assert roots.acquire("s1", "data").build_id == "b2"
    roots.close()
