"""The stages of a build, each run on the tree being built (see builder.py for the order).

Every stage reports through `say(line)`; the heavy ones run gently (chroot.GENTLE) so a daemon
on the same host keeps its share. Network is used only by debootstrap, apt, the host's pip
(downloading wheels) and npm; verify runs without any.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from sandbox.image_build import chroot, inside
from sandbox.image_build.recipe import Recipe
from sandbox.images import ImageError

Say = Callable[[str], None]
VENV = "/opt/venv"
WHEELS = "/var/tmp/sandboxd-wheels"  # inside the tree, during the python stage only
APT_CONF = "etc/apt/apt.conf.d/90sandboxd-build"
POLICY_RC = "usr/sbin/policy-rc.d"
# Documentation nobody reads in a sandbox (~120 MB in python-data); licences are kept.
DPKG_SLIM = "etc/dpkg/dpkg.cfg.d/90sandboxd-slim"
SLIM_RULES = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
)
# apt-get's per-package lines, counted into progress lines (`[2/6] apt: unpacked 143/412 ...`).
APT_STEPS = {"Get:": "downloaded", "Unpacking ": "unpacked", "Setting up ": "set up"}
DEFAULT_NPM_REGISTRY = "https://registry.npmjs.org/"
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
NPM_CA = "/var/tmp/sandboxd-npm-ca.crt"  # inside the tree, during the npm stage only
# Tries every module named in argv, then names all that failed (exit 1) or none (exit 0).
VERIFY_IMPORTS = """
import importlib, sys
bad = []
for module in sys.argv[1:]:
    try:
        importlib.import_module(module)
    except Exception as exc:
        bad.append(f"{module} ({type(exc).__name__}: {exc})")
if bad:
    print("cannot import: " + ", ".join(bad))
sys.exit(1 if bad else 0)
"""


def debootstrap(tree: Path, suite: str, mirror: str, say: Say) -> None:
    """A minbase Debian tree. debootstrap mounts /proc and /sys in the tree while it works:
    it runs in its own mount namespace, so those go away with it however it ends."""
    argv = ["unshare", "--mount", "--propagation", "private", "--"]
    argv += ["debootstrap", "--variant=minbase", "--components=main", suite, str(tree), mirror]
    count = 0

    def line(text: str) -> None:
        nonlocal count
        if text.startswith("I: Retrieving"):
            count += 1
            if count % 25 == 0:
                say(f"{count} packages retrieved")
        elif text.startswith(
            ("I: Validating", "I: Checking", "I: Extracting", "I: Unpacking", "I: Configuring")
        ):
            pass  # one line per package: too chatty
        elif text.startswith(("I:", "W:", "E:")):
            say(text[3:])

    chroot.run(argv, line, what="debootstrap")


def apt(tree: Path, packages: Sequence[str], *, snapshot: bool, say: Say) -> None:
    """apt-get install the recipe's packages in the tree (apt's own resolver; no recommends)."""
    resolv = Path("/etc/resolv.conf")
    (tree / "etc/resolv.conf").unlink(missing_ok=True)
    (tree / "etc/resolv.conf").write_text(resolv.read_text() if resolv.exists() else "")
    conf = 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'
    if snapshot:  # a snapshot's Release file is past its Valid-Until by design
        conf += 'Acquire::Check-Valid-Until "false";\n'
    (tree / APT_CONF).write_text(conf)
    (tree / DPKG_SLIM).write_text("".join(f"{rule}\n" for rule in SLIM_RULES))
    (tree / POLICY_RC).write_text("#!/bin/sh\nexit 101\n")  # no services started
    (tree / POLICY_RC).chmod(0o755)
    env = {**chroot.TOOL_ENV, "DEBIAN_FRONTEND": "noninteractive"}
    chroot.run(
        chroot.in_tree(tree, ["apt-get", "update", "-q"]), _quiet, env=env, what="apt update"
    )
    plan = chroot.output(
        chroot.in_tree(tree, ["apt-get", "install", "-s", "-y", *packages]), env=env,
        what="apt-get install (plan)",
    )  # fmt: skip
    total = sum(1 for row in plan.splitlines() if row.startswith("Inst "))
    say(f"{total} packages to install (for {len(packages)} asked)")
    counts = dict.fromkeys(APT_STEPS.values(), 0)
    step = max(total // 5, 1)

    def line(text: str) -> None:
        for prefix, done in APT_STEPS.items():
            if text.startswith(prefix):
                counts[done] += 1
                if counts[done] % step == 0 or counts[done] == total:
                    say(f"{done} {counts[done]}/{total} packages")
                return
        if text.startswith(("E:", "W:")):
            say(text)

    argv = ["apt-get", "install", "-y", "-q", "-o", "Dpkg::Use-Pty=0", *packages]
    chroot.run(chroot.in_tree(tree, argv), line, env=env, what="apt-get install")
    chroot.run(chroot.in_tree(tree, ["apt-get", "clean"]), _quiet, env=env, what="apt-get clean")
    (tree / APT_CONF).unlink()
    (tree / POLICY_RC).unlink()


def python(tree: Path, packages: Sequence[str], say: Say) -> None:
    """A venv at VENV that sees Debian's python3-* packages (--system-site-packages), with
    `packages` installed offline from wheels the host's pip downloaded for the image's Python
    and platform (the host's pip configuration decides the index: a mirror, local files)."""
    probe = (
        "import platform, sys; v = sys.version_info"
        "; print(v[0], v[1], platform.libc_ver()[1], platform.machine())"
    )
    found = chroot.output(chroot.in_tree(tree, ["python3", "-c", probe], network=False)).split()
    major, minor, libc, machine = found
    wheels = inside(tree, WHEELS)
    wheels.mkdir(parents=True, exist_ok=True)
    say(f"downloading wheels for CPython {major}.{minor}, glibc {libc}, {machine}")
    argv = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q"]
    argv += [
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        f"{major}.{minor}",
    ]
    argv += ["--abi", f"cp{major}{minor}", *_platforms(libc, machine)]
    argv += ["-d", str(wheels), *packages]
    # The host's own environment: pip's configuration may come from PIP_* variables.
    chroot.run(argv, _errors(say), env=os.environ, what="pip download")
    say(f"{len(list(wheels.glob('*.whl')))} wheels downloaded; creating {VENV}")
    venv = ["python3", "-m", "venv", "--system-site-packages", VENV]
    chroot.run(chroot.in_tree(tree, venv, network=False), say, what="python3 -m venv")
    install = [f"{VENV}/bin/python", "-m", "pip", "install", "--disable-pip-version-check"]
    install += ["--no-index", "--no-cache-dir", "--find-links", WHEELS, *packages]
    lines: list[str] = []
    chroot.run(chroot.in_tree(tree, install, network=False), lines.append, what="pip install")
    for text in lines:
        if text.startswith(("Successfully installed", "WARNING", "ERROR")):
            say(text)
    shutil.rmtree(wheels)


def npm(tree: Path, packages: Sequence[str], say: Say) -> None:
    """`npm install -g` with the image's npm, from the registry the host's npm uses, trusting
    the CA bundle the host's npm trusts (a mirror or proxy with its own CA) for this stage."""
    registry, cafile = DEFAULT_NPM_REGISTRY, HOST_CA_BUNDLE
    if shutil.which("npm"):
        registry = _host_npm("registry", registry, lambda v: v.startswith(("http://", "https://")))
        cafile = _host_npm("cafile", cafile, lambda v: Path(v).is_file())
    trust = inside(tree, NPM_CA)
    trust.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cafile, trust)
    say(f"npm install -g {len(packages)} packages from {registry}")
    argv = ["npm", "install", "-g", "--no-audit", "--no-fund", "--registry", registry]
    argv += ["--cafile", NPM_CA, *packages]
    try:
        chroot.run(chroot.in_tree(tree, argv), say, what="npm install")
    finally:
        trust.unlink()
        shutil.rmtree(tree / "root/.npm", ignore_errors=True)


def _host_npm(key: str, default: str, valid: Callable[[str], bool]) -> str:
    done = subprocess.run(
        ["npm", "config", "get", key], capture_output=True, text=True, check=False, timeout=60
    )
    value = done.stdout.strip()
    return value if done.returncode == 0 and valid(value) else default


def verify(tree: Path, recipe: Recipe, env: Mapping[str, str], say: Say) -> None:
    """The recipe's checks, in the finished tree, as the sandbox user, without network. Every
    import is tried (all failures named at once); then each command."""
    if recipe.verify_imports:
        script = VERIFY_IMPORTS
        argv = ["python3", "-c", script, *recipe.verify_imports]
        chroot.run(
            chroot.in_tree(tree, argv, as_sandbox=True, network=False), say, env=env,
            what="verify imports",
        )  # fmt: skip
        say(f"{len(recipe.verify_imports)} imports ok")
    for command in recipe.verify_commands:
        argv = ["sh", "-c", command]
        chroot.run(
            chroot.in_tree(tree, argv, as_sandbox=True, network=False), _quiet, env=env,
            what=f"verify command {command!r}",
        )  # fmt: skip
    if recipe.verify_commands:
        say(f"{len(recipe.verify_commands)} commands ok")
    for entry in inside(tree, "tmp").iterdir():  # what the checks left behind
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def versions(tree: Path, env: Mapping[str, str]) -> tuple[str, str | None]:
    """(python3's version, node's version or None), run in the tree."""
    probe = ["python3", "-c", "import platform; print(platform.python_version())"]
    py = chroot.output(chroot.in_tree(tree, probe, network=False), env=env).strip()
    node = None
    if (tree / "usr/bin/node").exists():
        out = chroot.output(chroot.in_tree(tree, ["node", "--version"], network=False), env=env)
        node = out.strip().removeprefix("v")
    if not py:
        raise ImageError("python3 in the image printed no version")
    return py, node


def _platforms(libc: str, machine: str) -> list[str]:
    """pip's --platform options for a glibc: every manylinux tag it can run, newest first
    (pip does not infer the older ones from the newest)."""
    major, _, minor = libc.partition(".")
    tags = [f"manylinux_{major}_{m}_{machine}" for m in range(int(minor), 4, -1)]
    tags += [f"manylinux2014_{machine}", f"manylinux2010_{machine}", f"manylinux1_{machine}"]
    return [arg for tag in [*tags, f"linux_{machine}"] for arg in ("--platform", tag)]


def _errors(say: Say) -> Say:
    return lambda line: say(line) if line.startswith("ERROR") else None


def _quiet(_line: str) -> None:
    pass
