"""What image.json says a build contains is read from the tree itself: dpkg's status file,
the Python distributions (the venv's shadowing Debian's), the global npm packages, the size
on disk (hard links once) and the Release date that pinned the package set."""

from __future__ import annotations

import json
import os
from pathlib import Path

from sandbox.image_build import chroot, metadata, stages

STATUS = """\
Package: python3
Status: install ok installed
Version: 3.11.2-1+b1
Description: x

Package: gone
Status: deinstall ok config-files
Version: 1.0

Package: curl
Status: install ok installed
Architecture: amd64
Version: 7.88.1-10+deb12u15
Description: multi
 line
"""


def _dist(site: Path, name: str, version: str) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_debian_packages_are_the_installed_ones_from_dpkg_status(tmp_path: Path) -> None:
    (tmp_path / "var/lib/dpkg").mkdir(parents=True)
    (tmp_path / "var/lib/dpkg/status").write_text(STATUS)
    assert metadata.debian_packages(tmp_path) == ["curl=7.88.1-10+deb12u15", "python3=3.11.2-1+b1"]


def test_python_packages_see_the_venv_first_then_debian(tmp_path: Path) -> None:
    _dist(tmp_path / "usr/lib/python3/dist-packages", "pandas", "1.5.3")
    _dist(tmp_path / "usr/lib/python3/dist-packages", "Pillow", "9.4.0")
    _dist(tmp_path / "opt/venv/lib/python3.11/site-packages", "pillow", "12.0.0")
    _dist(tmp_path / "opt/venv/lib/python3.11/site-packages", "python-pptx", "1.0.2")
    egg = tmp_path / "usr/lib/python3/dist-packages/six-1.16.0.egg-info"
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: six\nVersion: 1.16.0\n")
    assert metadata.python_packages(tmp_path) == [
        "pandas==1.5.3",
        "pillow==12.0.0",  # the venv's, which `import PIL` finds first
        "python-pptx==1.0.2",
        "six==1.16.0",
    ]
    assert metadata.python_packages(tmp_path / "nothing") == []


def test_npm_packages_are_the_global_ones_scoped_included(tmp_path: Path) -> None:
    assert metadata.npm_packages(tmp_path) == []
    base = tmp_path / metadata.NPM_GLOBAL
    for name, version in (("left-pad", "1.3.0"), ("@scope/tool", "2.0.1")):
        (base / name).mkdir(parents=True)
        (base / name / "package.json").write_text(json.dumps({"name": name, "version": version}))
    (base / "broken").mkdir()
    assert metadata.npm_packages(tmp_path) == ["@scope/tool@2.0.1", "left-pad@1.3.0"]


def test_size_counts_blocks_and_each_hard_link_once(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "big").write_bytes(os.urandom(64 * 1024))
    before = metadata.size_bytes(tree)
    assert before >= 64 * 1024
    os.link(tree / "d" / "big", tree / "d" / "again")
    (tree / "link").symlink_to("d/big")
    assert metadata.size_bytes(tree) - before < 8 * 1024  # not another 64 KiB


def test_the_release_date_is_the_suites(tmp_path: Path) -> None:
    lists = tmp_path / "var/lib/apt/lists"
    lists.mkdir(parents=True)
    assert metadata.release_date(tmp_path, "bookworm") == ""
    (lists / "deb.debian.org_debian_dists_bookworm_InRelease").write_text(
        "-----BEGIN PGP SIGNED MESSAGE-----\nOrigin: Debian\nDate: Sat, 10 May 2025 09:05:01 UTC\n"
    )
    assert metadata.release_date(tmp_path, "bookworm") == "Sat, 10 May 2025 09:05:01 UTC"


def test_wheels_are_fetched_for_every_manylinux_the_images_glibc_runs() -> None:
    args = stages._platforms("2.36", "x86_64")
    tags = args[1::2]
    assert set(args[0::2]) == {"--platform"}
    assert tags[0] == "manylinux_2_36_x86_64" and "manylinux_2_17_x86_64" in tags
    assert "manylinux_2_37_x86_64" not in tags  # newer than the image's glibc: would not load
    assert {"manylinux2014_x86_64", "linux_x86_64"} <= set(tags)


def test_commands_in_the_tree_run_in_their_own_mount_and_pid_namespaces() -> None:
    argv = chroot.in_tree(Path("/t"), ["python3", "-V"], as_sandbox=True, network=False)
    assert argv[:7] == ["unshare", "--mount", "--propagation", "private", "--pid", "--fork",
                        "--mount-proc=/t/proc"]  # fmt: skip
    assert "--net" in argv[: argv.index("--")]
    assert argv[-5:] == ["/t", "--userspec=1000:1000", "/t", "python3", "-V"]
    assert "--net" not in chroot.in_tree(Path("/t"), ["true"])
