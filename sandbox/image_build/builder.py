"""One build of an image from a recipe, start to publish.

    [1/N] debootstrap  a minbase tree of the suite (from the snapshot when the recipe pins one)
    [2/N] apt          the recipe's Debian packages
    [.]   python       a venv with the recipe's wheels   (only when the recipe has [python])
    [.]   npm          global npm packages               (only when the recipe has [npm])
    [.]   finish       the tree made fit for sandboxes (image_build.finish_tree)
    [.]   verify       the recipe's imports and commands, as the sandbox user, no network
    [N/N] publish      image.json written last, the build renamed into place, made current,
                       builds nobody uses any more collected

The tree is built under images/<name>/builds/.tmp-<build id>-<pid>/ and only a finished one
is renamed to builds/<build id>: a failed or killed build leaves the current build as it was
(a dead builder's .tmp-* is removed by the next build). One build per image name at a time
(a flock on images/<name>/.build.lock): a second one waits for the first to end, then finds
the image up to date if the recipe is the same. A build whose recipe digest equals the
current build's is a no-op unless forced. Blocking and slow
(minutes; downloads hundreds of MB): a CLI command, never the daemon.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sandbox import images
from sandbox.image_build import LAYOUT_VERSION, chroot, finish_tree, metadata, stages
from sandbox.image_build.recipe import Recipe
from sandbox.images import BuiltImage, ImageError

TMP_PREFIX = ".tmp-"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def image_env(recipe: Recipe) -> dict[str, str]:
    """The environment every sandbox process on the image gets (image.json `env`)."""
    path = f"{stages.VENV}/bin:{BASE_PATH}" if recipe.python else BASE_PATH
    env = {"PATH": path}
    if recipe.npm:  # node's require() finds the globally installed packages
        env["NODE_PATH"] = f"/{metadata.NPM_GLOBAL}"
    return {**env, **recipe.env}


def build(
    state_dir: Path,
    name: str,
    recipe: Recipe,
    mirror: str,
    say: Callable[[str], None],
    *,
    force: bool = False,
) -> tuple[BuiltImage, bool]:
    """Build image `name` from `recipe`; (its current build, whether a new one was made)."""
    mirror = recipe.mirror(mirror)
    digest = recipe.digest(layout_version=LAYOUT_VERSION, mirror=mirror)
    base = images.image_dir(state_dir, name)
    base.mkdir(parents=True, exist_ok=True)
    with images.locked(state_dir, name, say):
        try:
            current: BuiltImage | None = images.load(state_dir, name)
        except ImageError:
            current = None
        if current is not None and not force and current.meta.get("recipe_digest") == digest:
            say(f"image {name} is up to date (build {current.build_id})")
            return current, False
        for tool in ("debootstrap", "unshare", "chroot"):
            if shutil.which(tool, path=chroot.TOOL_PATH) is None:
                raise ImageError(f"{tool} is not installed (apt-get install debootstrap)")
        builds = base / images.BUILDS
        builds.mkdir(parents=True, exist_ok=True)
        for stale in builds.glob(f"{TMP_PREFIX}*"):  # a dead builder's: we hold the lock
            say(f"removing a half-built tree {stale.name}")
            images.discard(stale)
        build_id = _new_id(builds, digest)
        tmp = builds / f"{TMP_PREFIX}{build_id}-{os.getpid()}"
        tmp.mkdir()
        try:
            meta = _stages(tmp / "rootfs", name, build_id, recipe, mirror, digest, say)
            _write_json(tmp / images.STAMP, meta)  # last: a tree without it is half-built
            os.rename(tmp, builds / build_id)
        except BaseException:
            images.discard(tmp)
            raise
        images.publish(state_dir, name, build_id)
        removed = images.collect(state_dir, name, holding_lock=True)
        if removed:
            say(f"removed unused builds: {', '.join(removed)}")
        return images.load_build(state_dir, name, build_id), True


def _stages(
    tree: Path, name: str, build_id: str, recipe: Recipe, mirror: str, digest: str,
    say: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    started = time.monotonic()
    names = ["debootstrap", "apt"]
    names += ["python"] if recipe.python else []
    names += ["npm"] if recipe.npm else []
    names += ["finish", "verify", "publish"]

    def stage(which: str) -> Callable[[str], None]:
        number = f"[{names.index(which) + 1}/{len(names)}] {which}"
        say(f"{number} ({time.monotonic() - started:.0f} s)")
        return lambda line: say(f"{number}: {line}")

    stages.debootstrap(tree, recipe.suite, mirror, stage("debootstrap"))
    stages.apt(tree, recipe.debian, snapshot=bool(recipe.snapshot), say=stage("apt"))
    pinned_by = recipe.snapshot or metadata.release_date(tree, recipe.suite)
    if recipe.python:
        stages.python(tree, recipe.python, stage("python"))
    if recipe.npm:
        stages.npm(tree, recipe.npm, stage("npm"))
    stage("finish")
    finish_tree(tree)
    env = image_env(recipe)
    run_env = {**env, "HOME": "/tmp", "LC_ALL": "C.UTF-8"}
    stages.verify(tree, recipe, run_env, stage("verify"))
    say_publish = stage("publish")
    python_version, node_version = stages.versions(tree, run_env)
    meta: dict[str, Any] = {
        "name": name,
        "build_id": build_id,
        "recipe": recipe.name,
        "recipe_digest": digest,
        "description": recipe.description,
        "suite": recipe.suite,
        "mirror": mirror,
        "snapshot": pinned_by,
        "created_at": int(time.time()),
        "size_bytes": metadata.size_bytes(tree),
        "python_version": python_version,
        "node_version": node_version,
        "packages": {
            "debian": metadata.debian_packages(tree),
            "python": metadata.python_packages(tree),
            "npm": metadata.npm_packages(tree),
        },
        "env": env,
        # What the verify stage checked and found working in this tree.
        "verified": {
            "imports": list(recipe.verify_imports),
            "commands": list(recipe.verify_commands),
        },
        "layout_version": LAYOUT_VERSION,
    }
    counts = ", ".join(f"{len(v)} {k}" for k, v in meta["packages"].items())
    say_publish(
        f"{meta['size_bytes'] / 1e6:.0f} MB, python {python_version}, node {node_version or '-'},"
        f" packages: {counts}; built in {time.monotonic() - started:.0f} s"
    )
    return meta


def _new_id(builds: Path, digest: str) -> str:
    """<UTC yyyymmddHHMMSS>-<digest's first 12 hex>; a forced rebuild within the same second
    waits for the next one (ids are unique)."""
    while True:
        build_id = time.strftime("%Y%m%d%H%M%S", time.gmtime()) + "-" + digest[:12]
        if not (builds / build_id).exists():
            return build_id
        time.sleep(0.5)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
