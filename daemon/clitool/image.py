"""`sandboxd image build [NAME]`: a Debian rootfs for sandboxes, made locally (no registry).

Use it with `runtime.image = "NAME"`: the oci backend runs on the tree directly, the docker
backend imports it once as sandboxd/NAME:<build id> when the daemon starts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from daemon import config as config_mod
from daemon.clitool.containers import Console
from sandbox import image_build
from sandbox.images import ImageError, check_name

DEFAULT_NAME = "debian"


def build(args: argparse.Namespace, euid: int, con: Console) -> int:
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as exc:
        con.error(f"bad configuration: {exc}")
        return config_mod.EX_CONFIG
    if euid != 0:
        con.error("image build runs debootstrap, which needs root")
        return 1
    state_dir = Path(args.state_dir or cfg.state_dir)
    try:
        name = check_name(args.name)
        wanted = image_build.recipe(
            data_libs=args.with_data_libs,
            suite=args.suite,
            mirror=args.mirror or image_build.host_mirror(),
        )

        def progress(line: str) -> None:
            con.out.write(f"image build: {line}\n")
            con.out.flush()

        root, _built = image_build.build(state_dir, name, wanted, progress, force=args.force)
    except (ImageError, OSError) as exc:
        con.error(f"image build failed: {exc}")
        return 1
    con.out.write(f'{root}\nuse it with: [runtime] image = "{name}"\n')
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    image = sub.add_parser("image", help="root filesystems for sandboxes (no registry)")
    image_sub = image.add_subparsers(dest="image_command", required=True)
    b = image_sub.add_parser("build", help="build (idempotently) a Debian rootfs with debootstrap")
    b.add_argument("name", nargs="?", default=DEFAULT_NAME, help=f"default {DEFAULT_NAME}")
    b.add_argument("--config", type=Path, help="TOML configuration file (for state_dir)")
    b.add_argument("--state-dir", help="state directory (default: the config's)")
    b.add_argument(
        "--with-data-libs", action="store_true", help="add numpy, pandas, matplotlib (Debian)"
    )
    b.add_argument("--suite", default=image_build.DEFAULT_SUITE, help="Debian suite")
    b.add_argument("--mirror", default="", help="Debian mirror (default: the host apt's)")
    b.add_argument("--force", action="store_true", help="rebuild even if up to date")
