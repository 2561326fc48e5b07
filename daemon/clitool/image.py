"""`sandboxd image build|ls|rm`: images for sandboxes, built locally from recipes (no registry).

`build RECIPE` makes a build of the recipe (a name in /etc/sandboxd/images or the shipped
config/images, or a path to a .toml) and makes it the image's current one; containers pick
an image at create (`image`, default `runtime.default_image`). `ls` shows every image's
current build, `rm` deletes an image unless a running sandbox uses it. All work on the state
directory directly (no daemon needed; a running daemon is not disturbed).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from daemon import config as config_mod
from daemon.clitool import output
from daemon.clitool.containers import Console
from daemon.clitool.dispatch import EX_INTERRUPTED
from sandbox import images
from sandbox.image_build import builder, recipe
from sandbox.images import ImageError


def run(args: argparse.Namespace, euid: int, con: Console) -> int:
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as exc:
        con.error(f"bad configuration: {exc}")
        return config_mod.EX_CONFIG
    state_dir = Path(args.state_dir or cfg.state_dir)
    try:
        if args.image_command == "build":
            return _build(args, state_dir, euid, con)
        if args.image_command == "ls":
            return _ls(state_dir, cfg.runtime.default_image, args.json, con)
        images.remove(state_dir, args.name)
        con.out.write(f"removed image {args.name}\n")
        return 0
    except (ImageError, OSError) as exc:
        con.error(f"image {args.image_command} failed: {exc}")
        return 1
    except KeyboardInterrupt:  # a build removed its half tree on the way out
        con.error(f"image {args.image_command} interrupted")
        return EX_INTERRUPTED


def _build(args: argparse.Namespace, state_dir: Path, euid: int, con: Console) -> int:
    if euid != 0:
        con.error("image build runs debootstrap and chroot, which need root")
        return 1
    wanted = recipe.load(recipe.find(args.recipe))
    if args.suite:
        wanted = dataclasses.replace(wanted, suite=args.suite)
    name = images.check_name(args.name or wanted.name)

    def say(line: str) -> None:
        con.out.write(f"image build {name}: {line}\n")
        con.out.flush()

    mirror = args.mirror or recipe.host_mirror()
    built, _new = builder.build(state_dir, name, wanted, mirror, say, force=args.force)
    con.out.write(f"{name} build {built.build_id}: {built.rootfs}\n")
    return 0


def _ls(state_dir: Path, default: str, as_json: bool, con: Console) -> int:
    found = images.list_images(state_dir)
    if as_json:
        output.print_json([dict(b.meta) for b in found], con.out)
        return 0
    rows = []
    for built in found:
        meta = built.meta
        size = meta.get("size_bytes")
        rows.append([
            built.name + (" (default)" if built.name == default else ""),
            built.build_id,
            f"{size / 1e6:.0f} MB" if isinstance(size, int) else "-",
            output.ago(meta.get("created_at", meta.get("built_at"))),
            str(meta.get("python_version") or "-"),
            str(meta.get("node_version") or "-"),
            str(meta.get("description") or ""),
        ])  # fmt: skip
    headers = ["NAME", "BUILD", "SIZE", "CREATED", "PYTHON", "NODE", "DESCRIPTION"]
    con.out.write(output.table(headers, rows))
    if default == images.HOST:
        con.out.write(f"(default: {images.HOST}, the host's own /usr)\n")
    elif default not in {b.name for b in found}:
        con.out.write(f"(default: {default}, not built)\n")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    image = sub.add_parser("image", help="images for sandboxes, built from recipes (no registry)")
    image_sub = image.add_subparsers(dest="image_command", required=True)
    known = ", ".join(recipe.available()) or "none found"
    b = image_sub.add_parser("build", help="build an image from a recipe (idempotent, atomic)")
    b.add_argument("recipe", help=f"a recipe name ({known}) or a path to a .toml file")
    b.add_argument("--name", default="", help="the image's name (default: the recipe's)")
    b.add_argument("--suite", default="", help="Debian suite (default: the recipe's)")
    b.add_argument("--mirror", default="", help="Debian mirror (default: the host apt's)")
    b.add_argument("--force", action="store_true", help="a new build even if up to date")
    ls = image_sub.add_parser("ls", help="the images and their current builds")
    ls.add_argument("--json", action="store_true", help="each image's image.json")
    rm = image_sub.add_parser("rm", help="remove an image (refused while sandboxes use it)")
    rm.add_argument("name")
    for p in (b, ls, rm):
        p.add_argument("--config", type=Path, help="TOML configuration file (for state_dir)")
        p.add_argument("--state-dir", help="state directory (default: the config's)")
