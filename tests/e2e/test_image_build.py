"""`sandboxd image build`: a real debootstrap, then sandboxes on the image with both backends.

The image is built into a persistent cache (IMAGE_CACHE): the first run on a machine pays the
debootstrap (a few minutes, it downloads from the host apt's Debian mirror); every later run
checks that a second build is a no-op and reuses the tree. Remove the directory to force a
fresh build.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.docker.runtime import DockerRuntime, DockerSettings
from sandbox.images import load
from sandbox.oci.runtime import OciRuntime, OciSettings, forget_instance
from sandbox.runtime import Runtime
from sandbox.seccomp import load_profile
from tests.runtime.conftest import RunResources, check, run_resources, spec

pytestmark = [pytest.mark.root, pytest.mark.e2e, pytest.mark.slow]

__all__ = ["run_resources"]  # the runtime suite's session fixture (host cleanup), used here
IMAGE_CACHE = Path("/var/cache/sandboxd-tests")
NAME = "ci-base"


def _build() -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "daemon", "image", "build", NAME, "--state-dir", str(IMAGE_CACHE)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=1200, check=False)


@pytest.fixture(scope="module")
def image() -> Path:
    IMAGE_CACHE.mkdir(parents=True, exist_ok=True, mode=0o755)
    first = _build()
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    again = _build()  # idempotent: nothing to do the second time
    assert again.returncode == 0, again.stderr
    assert f"image {NAME} is up to date" in again.stdout
    built = load(IMAGE_CACHE, NAME)
    meta = json.loads((built.rootfs.parent / "image.json").read_text())
    assert {"python3", "python3-pip", "ca-certificates", "curl", "git"} <= set(meta["packages"])
    return built.rootfs.parent


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


def _state_with(image_dir: Path, run: RunResources) -> Path:
    """A base dir whose state dir (<base>/state) has the image."""
    base = run.new_state_dir()
    (base / "state" / "images").mkdir(parents=True)
    (base / "state" / "images" / NAME).symlink_to(image_dir)
    return base


async def test_oci_runs_on_the_built_image(image: Path, run_resources: RunResources) -> None:
    base = _state_with(image, run_resources)
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
    base = _state_with(image, run_resources)
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
