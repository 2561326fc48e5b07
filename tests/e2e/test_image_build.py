"""`sandboxd image build RECIPE`: real builds of the shipped recipes, then sandboxes on the
image with both backends; a build that fails (its verify stage) or is killed leaves the
current build as it was, no half tree and no mount behind.

The shipped images are built into a persistent cache (IMAGE_CACHE), once per machine: the
first run pays the builds (minimal ~40 s and 300 MiB, python-data 2-3 min and 1.8 GiB, on a
fast mirror; see README "Images"); every later run checks that a second build is a no-op and
reuses the trees. Remove the directory to force fresh builds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox import images
from sandbox.docker.runtime import DockerRuntime, DockerSettings
from sandbox.images import BuiltImage, load, mounts_under
from sandbox.oci.runtime import OciRuntime, OciSettings, forget_instance
from sandbox.runtime import Runtime
from sandbox.seccomp import load_profile
from tests import imagecache
from tests.imagecache import IMAGE_CACHE
from tests.runtime.conftest import RunResources, check, run_resources, spec

# A first run builds (minutes); pytest-timeout would stop it at its default.
pytestmark = [pytest.mark.root, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

__all__ = ["run_resources"]  # the runtime suite's session fixture (host cleanup), used here
NAME = "minimal"
BUILD_ID = re.compile(r"\d{14}-[0-9a-f]{12}")


def _image(*args: str, state: Path = IMAGE_CACHE) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "daemon", "image", *args, "--state-dir", str(state)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)


def _cached(recipe: str) -> BuiltImage:
    """The shipped recipe's image in the cache: built on the first run, a no-op after."""
    imagecache.built(recipe)
    again = imagecache.build(recipe)  # idempotent: nothing to do the second time
    assert again.returncode == 0, again.stderr
    assert f"image {recipe} is up to date" in again.stdout
    built = load(IMAGE_CACHE, recipe)
    assert again.stdout.endswith(f"{recipe} build {built.build_id}: {built.rootfs}\n")
    return built


def _check_common(built: BuiltImage, recipe: str) -> dict[str, list[str]]:
    meta = built.meta
    assert BUILD_ID.fullmatch(built.build_id)
    assert meta["recipe"] == recipe and meta["name"] == recipe
    assert built.build_id.endswith(meta["recipe_digest"][:12])
    assert meta["suite"] == "bookworm" and meta["snapshot"] and meta["description"]
    assert meta["python_version"].startswith("3.11.")
    assert meta["size_bytes"] > 100_000_000 and meta["created_at"] > 1_700_000_000
    packages: dict[str, list[str]] = meta["packages"]
    debian = {p.partition("=")[0] for p in packages["debian"]}
    assert {"python3", "python3-pip", "ca-certificates", "curl", "git"} <= debian
    assert images.current_id(IMAGE_CACHE, recipe) == built.build_id
    assert not list((built.rootfs.parent.parent).glob(".tmp-*"))
    return packages


@pytest.fixture(scope="module")
def image() -> Path:
    built = _cached(NAME)
    packages = _check_common(built, NAME)
    assert built.meta["node_version"] is None and packages["npm"] == []
    assert built.meta["verified"]["imports"] == ["ssl", "sqlite3", "venv", "pip"]
    return images.image_dir(IMAGE_CACHE, NAME)


def test_python_data_is_built_verified_and_described() -> None:
    built = _cached("python-data")
    packages = _check_common(built, "python-data")
    meta = built.meta
    python = {p.partition("==")[0].lower() for p in packages["python"]}
    assert {"pandas", "numpy", "scipy", "matplotlib", "python-pptx", "pdfplumber"} <= python
    debian = {p.partition("=")[0] for p in packages["debian"]}
    assert {"nodejs", "npm", "jq", "sqlite3", "poppler-utils", "fonts-dejavu-core"} <= debian
    assert meta["node_version"] and meta["node_version"][0].isdigit()
    assert meta["env"]["PATH"].startswith("/opt/venv/bin:") and meta["env"]["MPLBACKEND"] == "Agg"
    assert {"pandas", "sklearn", "pptx", "pdfplumber"} <= set(meta["verified"]["imports"])
    assert any(c.startswith("node -e") for c in meta["verified"]["commands"])
    assert meta["size_bytes"] > load(IMAGE_CACHE, NAME).meta["size_bytes"]
    assert (built.rootfs / "opt/venv/bin/python3").exists()
    venv = next((built.rootfs / "opt/venv/lib").glob("python3*/site-packages"))
    assert (venv / "pptx").is_dir() and (venv / "pdfplumber").is_dir()
    assert not (venv / "PIL").exists()  # Debian's Pillow, the one its matplotlib is built for
    assert (built.rootfs / "etc/resolv.conf").read_text() == ""  # the build's resolver is gone
    listing = _image("ls")
    assert listing.returncode == 0, listing.stderr
    row = next(r for r in listing.stdout.splitlines() if r.startswith("python-data "))
    assert built.build_id in row and meta["python_version"] in row and meta["node_version"] in row


def test_a_killed_then_failing_build_leaves_the_current_build_and_no_mounts(
    tmp_path: Path,
) -> None:
    """A build interrupted half-way (in apt) removes its tree; one killed there leaves a .tmp
    tree and no mounts; the next build removes it, and failing its verify stage it leaves
    `current` as it was."""
    state = tmp_path / "state"
    name = "verify-fails"
    old = images.build_dir(state, name, "20200101000000-000000000000")
    (old / "rootfs").mkdir(parents=True)
    (old / images.STAMP).write_text(json.dumps({"name": name, "build_id": old.name}))
    images.publish(state, name, old.name)
    recipe = tmp_path / f"{name}.toml"
    recipe.write_text(  # node and an npm package: the npm stage runs before verify fails
        'description = "python3, node, and a module nobody has"\n'
        '[debian]\npackages = ["python3-minimal", "nodejs", "npm"]\n'
        '[npm]\npackages = ["left-pad@1.3.0"]\n'
        '[verify]\nimports = ["json", "no_such_module_anywhere"]\n'
    )
    argv = [sys.executable, "-m", "daemon", "image", "build", str(recipe)]
    argv += ["--state-dir", str(state)]
    builds = old.parent

    def stopped_in_apt(sig: signal.Signals) -> tuple[int, str]:
        with subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        ) as build:  # fmt: skip
            assert build.stdout is not None
            seen = []
            for line in build.stdout:
                seen.append(line)
                if "] apt: " in line:  # apt runs in the tree, /proc and /dev mounted for it
                    os.killpg(build.pid, sig)
                    break
            seen += build.stdout.readlines()
            return build.wait(timeout=120), "".join(seen)

    # Ctrl-C: the builder removes its half tree itself.
    code, out = stopped_in_apt(signal.SIGINT)
    assert code == 130 and "image build interrupted" in out, out
    assert sorted(p.name for p in builds.iterdir()) == [old.name]
    assert mounts_under(state) == []
    # Killed: nothing runs to clean up.
    code, out = stopped_in_apt(signal.SIGKILL)
    assert code == -signal.SIGKILL, out
    time.sleep(0.5)  # the killed group's last processes exit
    half = list(builds.glob(".tmp-*"))
    assert len(half) == 1 and (half[0] / "rootfs/usr/bin").is_dir()
    assert mounts_under(state) == [], "the killed build leaked mounts"
    assert images.current_id(state, name) == old.name

    failed = _image("build", str(recipe), state=state)
    assert failed.returncode == 1, failed.stdout[-2000:]
    assert f"removing a half-built tree {half[0].name}" in failed.stdout
    assert "no_such_module_anywhere (ModuleNotFoundError" in failed.stderr
    assert "json" not in failed.stderr.partition("cannot import:")[2]
    assert "[3/6] npm: added 1 package" in failed.stdout
    assert "[5/6] verify" in failed.stdout  # every stage before verify ran
    assert sorted(p.name for p in builds.iterdir()) == [old.name]  # no half tree left
    assert images.current_id(state, name) == old.name
    assert mounts_under(state) == []


async def _probe(runtime: Runtime) -> None:
    s = spec()
    await runtime.create(s)
    try:
        sid = s.sandbox_id
        out = await check(runtime, sid, "cat /etc/debian_version; id -un; python3 -c 'print(6*7)'")
        lines = out.splitlines()
        assert lines[1:] == ["sandbox", "42"], out
        assert lines[0][:2].isdigit()
        assert await check(runtime, sid, "git --version | cut -c1-11; curl --version | head -c 4")
    finally:
        await runtime.destroy(s.sandbox_id)


def _state_with(run: RunResources) -> Path:
    """A base dir whose state dir (<base>/state) has the image."""
    base = run.new_state_dir()
    imagecache.link_into(base / "state", NAME)
    return base


async def test_oci_runs_on_the_built_image(image: Path, run_resources: RunResources) -> None:
    base = _state_with(run_resources)
    settings = OciSettings(
        state_dir=base / "state",
        runtime_root=base / "runc",
        cgroup_parent=run_resources.cgroup_parent,
        default_image=NAME,
    )
    runtime = OciRuntime(settings, load_profile())
    try:
        await runtime.start()
        await _probe(runtime)
    finally:
        await runtime.close()
        forget_instance(base / "runc", [run_resources.cgroup_parent], runtime.instance)
        shutil.rmtree(base)


@pytest.mark.docker
async def test_docker_imports_and_runs_the_built_image(
    image: Path, run_resources: RunResources, docker_engine: str
) -> None:
    base = _state_with(run_resources)
    settings = DockerSettings(
        state_dir=base / "state",
        engine_url=docker_engine,
        default_image=NAME,
        cgroup_parent=run_resources.docker_cgroup_parent,
    )
    runtime = DockerRuntime(settings, load_profile())
    try:
        await runtime.start()
        assert runtime.image_ref.startswith(f"sandboxd/{NAME}:")
        await _probe(runtime)
    finally:
        await runtime.close()
        forget_instance(base / "runc", [run_resources.docker_cgroup_parent], runtime.instance)
        shutil.rmtree(base)
