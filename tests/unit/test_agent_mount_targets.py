"""Every agent module is bound into the sandbox over a file the shared read-only root already
has: the skeleton and built images make them all, and an image without them is refused at the
oci runtime's start (runc could not make them) rather than at every create."""

from __future__ import annotations

from pathlib import Path

from sandbox.host.rootfs import AGENT_SCRIPTS, ensure_skeleton, missing_agent_targets
from sandbox.image_build import EMPTY_FILES
from sandbox.spec import AGENT_DIR, AGENT_LAZY_MODULES

TARGETS = [f"{AGENT_DIR}/{name}" for name in ("agent.py", *AGENT_LAZY_MODULES, "interpreter.py")]


def test_the_skeleton_has_every_agent_mount_target(tmp_path: Path) -> None:
    (tmp_path / "host").mkdir()
    skeleton = ensure_skeleton(tmp_path / "rootfs", host_root=tmp_path / "host")
    assert missing_agent_targets(skeleton) == []
    assert sorted(f"{AGENT_DIR}/{name}" for name in AGENT_SCRIPTS) == sorted(TARGETS)


def test_built_images_make_every_agent_mount_target() -> None:
    assert set(TARGETS) <= set(EMPTY_FILES)


def test_a_root_without_them_is_told_apart(tmp_path: Path) -> None:
    assert missing_agent_targets(tmp_path) == TARGETS
    (tmp_path / AGENT_DIR.lstrip("/")).mkdir()
    (tmp_path / AGENT_DIR.lstrip("/") / "agent.py").touch()
    (tmp_path / AGENT_DIR.lstrip("/") / "interpreter.py").touch()
    assert missing_agent_targets(tmp_path) == [f"{AGENT_DIR}/{n}" for n in AGENT_LAZY_MODULES]
