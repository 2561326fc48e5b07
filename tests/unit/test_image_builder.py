"""The builder's bookkeeping, without building: an up-to-date image is a no-op (no tools
needed), a second build of one name waits for the first, and `sandboxd image ls|rm` show and
remove images (rm refused while a build runs or a build is pinned)."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from pathlib import Path

import pytest

from daemon import cli
from sandbox import images
from sandbox.image_build import LAYOUT_VERSION, builder, recipe

MIRROR = "http://deb.debian.org/debian"


def _recipe(imports: tuple[str, ...] = ()) -> recipe.Recipe:
    return recipe.parse(
        "tiny", {"debian": {"packages": ["python3"]}, "verify": {"imports": list(imports)}}
    )


def _fake_build(state: Path, name: str, build_id: str, **meta: object) -> None:
    where = images.build_dir(state, name, build_id)
    (where / "rootfs").mkdir(parents=True)
    data = {"name": name, "build_id": build_id, "size_bytes": 5_000_000, "created_at": 1, **meta}
    (where / images.STAMP).write_text(json.dumps(data))
    images.publish(state, name, build_id)


def test_a_build_of_an_unchanged_recipe_is_a_no_op(tmp_path: Path) -> None:
    wanted = _recipe()
    digest = wanted.digest(layout_version=LAYOUT_VERSION, mirror=MIRROR)
    _fake_build(tmp_path, "tiny", f"20260101000000-{digest[:12]}", recipe_digest=digest)
    said: list[str] = []
    built, new = builder.build(tmp_path, "tiny", wanted, MIRROR, said.append)
    assert not new and built.build_id == f"20260101000000-{digest[:12]}"
    assert said == [f"image tiny is up to date (build {built.build_id})"]


def test_a_second_build_of_one_name_waits_for_the_first(tmp_path: Path) -> None:
    wanted = _recipe()
    digest = wanted.digest(layout_version=LAYOUT_VERSION, mirror=MIRROR)
    base = images.image_dir(tmp_path, "tiny")
    base.mkdir(parents=True)
    fd = os.open(base / images.LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the first build runs

    def first_build_ends() -> None:
        time.sleep(0.3)
        _fake_build(tmp_path, "tiny", f"20260101000000-{digest[:12]}", recipe_digest=digest)
        os.close(fd)

    said: list[str] = []
    first = threading.Thread(target=first_build_ends)
    first.start()
    try:
        built, new = builder.build(tmp_path, "tiny", wanted, MIRROR, said.append)
    finally:
        first.join()
    assert said[0] == "another build of image tiny is running: waiting for it to end"
    assert not new and said[1] == f"image tiny is up to date (build {built.build_id})"


def test_a_venv_comes_first_on_the_images_path() -> None:
    plain = builder.image_env(_recipe())
    assert plain["PATH"].startswith("/usr/local/sbin:")
    with_wheels = recipe.parse(
        "x", {"debian": {"packages": ["python3"]}, "python": {"packages": ["a"]}, "env": {"A": "1"}}
    )
    assert builder.image_env(with_wheels) == {
        "PATH": f"/opt/venv/bin:{builder.BASE_PATH}",
        "A": "1",
    }
    with_npm = recipe.parse("x", {"debian": {"packages": ["npm"]}, "npm": {"packages": ["a"]}})
    assert builder.image_env(with_npm)["NODE_PATH"] == "/usr/local/lib/node_modules"


def test_image_ls_and_rm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'state_dir = "{tmp_path}"\n')
    _fake_build(
        tmp_path, "tiny", "20260101000000-aaaaaaaaaaaa", python_version="3.11.2",
        node_version=None, description="a tiny one",
    )  # fmt: skip
    assert cli.main(["image", "ls", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [
        "NAME", "BUILD", "SIZE", "CREATED", "PYTHON", "NODE", "DESCRIPTION"
    ]  # fmt: skip
    assert "tiny  20260101000000-aaaaaaaaaaaa  5 MB" in out and "3.11.2" in out
    assert cli.main(["image", "ls", "--json", "--state-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)[0]["description"] == "a tiny one"
    assert "(default: host, the host's own /usr)" in out
    config.write_text(f'state_dir = "{tmp_path}"\n[runtime]\ndefault_image = "tiny"\n')
    assert cli.main(["image", "ls", "--config", str(config)]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("tiny (default)  2026")
    lock = os.open(images.image_dir(tmp_path, "tiny") / images.LOCK, os.O_RDWR | os.O_CREAT)
    try:  # a build of it runs
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert cli.main(["image", "rm", "tiny", "--state-dir", str(tmp_path)]) == 1
        assert "a build of image 'tiny' is running" in capsys.readouterr().err
    finally:
        os.close(lock)
    pin = images.Pin(images.load(tmp_path, "tiny"))
    try:
        assert cli.main(["image", "rm", "tiny", "--state-dir", str(tmp_path)]) == 1
        assert "in use" in capsys.readouterr().err
    finally:
        pin.release()
    assert cli.main(["image", "rm", "tiny", "--state-dir", str(tmp_path)]) == 0
    assert images.list_images(tmp_path) == []
    assert cli.main(["image", "rm", "tiny", "--state-dir", str(tmp_path)]) == 1
    assert "not found" in capsys.readouterr().err


def test_host_side_writes_never_go_through_a_symlink_in_the_tree(tmp_path: Path) -> None:
    """Code run in the tree as root (maintainer or npm scripts) could plant `/tmp -> /`: the
    builder's own writes and deletes (as host root) must refuse to follow it."""
    from sandbox.image_build import finish_tree, inside

    root = tmp_path / "tree"
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "group"):
        (root / "etc" / name).write_text("root:x:0:0::/root:/bin/sh\n")
    outside = tmp_path / "host-dir"
    outside.mkdir(mode=0o755)
    (root / "tmp").symlink_to(outside)
    with pytest.raises(images.ImageError, match="/tmp in the image is a symlink"):
        finish_tree(root)
    assert outside.stat().st_mode & 0o7777 == 0o755  # not chmodded 1777 through the link
    assert inside(root, "etc/hosts") == root / "etc" / "hosts"
