"""Running the build's tools: on the host, and inside the tree being built (a chroot).

A command inside the tree runs in its own mount and pid namespaces (unshare): /proc and the
host's /dev are mounted there for it, and vanish with the namespace when the command ends —
whichever way it ends, even if the builder is killed — so a build never leaks a mount, and a
daemon a package's postinst starts dies with it. `network=False` adds an empty network
namespace (the verify stage).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from sandbox.images import ImageError
from sandbox.spec import SANDBOX_GID, SANDBOX_UID

TOOL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TOOL_ENV = {"PATH": TOOL_PATH, "LC_ALL": "C.UTF-8", "HOME": "/root"}
# Heavy stages yield to a daemon on the same host: low CPU and best-effort-lowest IO priority.
GENTLE = ("nice", "-n", "10", "ionice", "-c", "2", "-n", "7")
TAIL = 12


def in_tree(
    tree: Path, argv: Sequence[str], *, as_sandbox: bool = False, network: bool = True
) -> list[str]:
    """The argv that runs `argv` chrooted into `tree` (see the module docstring)."""
    wrap = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork"]
    wrap += [f"--mount-proc={tree}/proc"]
    if not network:
        wrap += ["--net"]
    user = [f"--userspec={SANDBOX_UID}:{SANDBOX_GID}"] if as_sandbox else []
    script = 'mount --rbind /dev "$0/dev" && exec chroot "$@"'
    return [*wrap, "--", "sh", "-c", script, str(tree), *user, str(tree), *argv]


def run(
    argv: Sequence[str],
    on_line: Callable[[str], None],
    *,
    env: Mapping[str, str] = TOOL_ENV,
    what: str = "",
) -> None:
    """Run `argv` (gently), every output line to `on_line`; ImageError with the last lines if
    it fails."""
    tail: list[str] = []
    with subprocess.Popen(
        [*GENTLE, *argv],
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            tail = [*tail[-(TAIL - 1) :], line]
            on_line(line)
    if proc.returncode != 0:
        name = what or argv[0]
        raise ImageError(f"{name} failed (exit {proc.returncode}): " + " | ".join(tail[-5:]))


def output(argv: Sequence[str], *, env: Mapping[str, str] = TOOL_ENV, what: str = "") -> str:
    """Run `argv` and return its stdout; ImageError if it fails."""
    done = subprocess.run(
        list(argv), env=dict(env), stdin=subprocess.DEVNULL, capture_output=True, text=True,
        errors="replace", check=False, timeout=600,
    )  # fmt: skip
    if done.returncode != 0:
        name = what or argv[0]
        raise ImageError(f"{name} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout
