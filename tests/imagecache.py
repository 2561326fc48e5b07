"""Images built once per machine for the tests, by the real `sandboxd image build`, into a
persistent cache: the first run on a machine pays for debootstrap and the downloads (see the
README's "Images" for what that costs); later runs find them up to date (a no-op build).
Remove IMAGE_CACHE to force fresh builds. A daemon under test gets them by symlinks in its
own state dir (`link_into`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

IMAGE_CACHE = Path("/var/cache/sandboxd-tests")
BUILD_TIMEOUT_S = 2400


def build(recipe: str) -> subprocess.CompletedProcess[str]:
    """`sandboxd image build RECIPE` into the cache (idempotent)."""
    IMAGE_CACHE.mkdir(parents=True, exist_ok=True, mode=0o755)
    argv = [sys.executable, "-m", "daemon", "image", "build", recipe]
    argv += ["--state-dir", str(IMAGE_CACHE)]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
    )


def built(recipe: str) -> Path:
    """The image's dir in the cache, built first if it is not up to date."""
    done = build(recipe)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return IMAGE_CACHE / "images" / recipe


def link_into(state_dir: Path, *names: str) -> None:
    """Make the cached images `names` visible in a daemon's state dir."""
    (state_dir / "images").mkdir(parents=True, exist_ok=True)
    for name in names:
        (state_dir / "images" / name).symlink_to(IMAGE_CACHE / "images" / name)
