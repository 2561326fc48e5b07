"""Find a daemon instance's sandboxes on the host the way the host names them: sandbox dirs
and mounts carry the first id of a sandbox's uid range, which the instance's claims in the
host-wide registry map back to container ids (sandbox/idranges.py)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from sandbox.host.dirs import instance_of
from sandbox.idranges import HOST_REGISTRY


def claims(instance: str) -> dict[str, str]:
    """First id (as a dir name) -> container id, for every claim of `instance`."""
    found: dict[str, str] = {}
    for claim in HOST_REGISTRY.glob("*-*"):
        with contextlib.suppress(OSError):
            owner, sid = [*claim.read_text().split(), "", ""][:2]
            if owner == instance:
                found[claim.name.split("-")[0]] = sid
    return found


def sandbox_dirs(state_dir: Path) -> dict[str, Path]:
    """Container id -> its dir under <state_dir>/sandboxes (an unclaimed dir keeps its name)."""
    names = claims(instance_of(state_dir))
    sandboxes = state_dir / "sandboxes"
    if not sandboxes.is_dir():
        return {}
    return {names.get(p.name, p.name): p for p in sandboxes.iterdir()}
