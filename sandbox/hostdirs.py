"""What both runtime backends share on the host: the daemon's instance id, the state and
per-sandbox directories, the agent's files, and the all-or-nothing create.

Nothing a sandbox owns on the host is reachable by other host accounts: the state dir, its
`sandboxes/` and every sandbox's dir are 0700 root, and what a sandbox's own ids must reach
lies below that. A sandbox's dir is named after the first host id of its uid range, not its
container id, so neither the host's world-readable /proc/mounts nor the sandbox's own
mountinfo names a container."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from sandbox.errors import RuntimeFailure
from sandbox.oci import workspace
from sandbox.spec import AGENT_DIR, AGENT_LAZY_MODULES, AGENT_PYCACHE

logger = logging.getLogger(__name__)

AGENT_SCRIPT = Path(__file__).resolve().parent / "agent" / "agent.py"
INTERPRETER_SCRIPT = AGENT_SCRIPT.with_name("interpreter.py")
AGENT_READY_TIMEOUT_S = 15.0
SANDBOX_PYTHON = "/usr/bin/python3"  # the host's, which the host skeleton binds in
# What the agent imports (agent.py at start, the others on first use), all compiled.
AGENT_MODULES = (AGENT_SCRIPT, *(AGENT_SCRIPT.with_name(name) for name in AGENT_LAZY_MODULES))
# Run by the sandbox's Python: checked-hash bytecode (validated against the bound source at
# every import, so a stale file can only be ignored, never run), each module's tracebacks
# naming its file in the sandbox's AGENT_DIR.
_COMPILE = (
    "import os, py_compile, sys\n"
    "out, shown = sys.argv[1:3]\n"
    "for src in sys.argv[3:]:\n"
    "    name = os.path.basename(src)\n"
    "    py_compile.compile(src, cfile=f'{out}/{name[:-3]}.{sys.implementation.cache_tag}.pyc', "
    "dfile=f'{shown}/{name}', doraise=True, "
    "invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)\n"
)


def agent_pycache(state_dir: Path, root: Path) -> str:
    """The host dir to bind at AGENT_PYCACHE for sandboxes on `root`, or "" (no bind) if
    the root predates that mount point or no bytecode could be made."""
    if not (root / AGENT_PYCACHE.lstrip("/")).is_dir():
        return ""
    found = agent_bytecode(state_dir)
    return "" if found is None else str(found)


def agent_bytecode(state_dir: Path, python: str = SANDBOX_PYTHON) -> Path | None:
    """Compile the agent with the sandbox's Python into <state>/agent-bytecode/<digest>/
    (bound at AGENT_PYCACHE), or None (logged) when that Python cannot: the agent then
    compiles itself at each start, as it would without this (~13 ms a sandbox here).

    Content-addressed and never rewritten: sandboxes that outlive a daemon upgrade keep
    the directory they were started with. Blocking: call off the event loop."""
    base = state_dir / "agent-bytecode"
    base.mkdir(mode=0o755, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=base, prefix=".tmp-"))
    try:
        argv = [python, "-I", "-S", "-c", _COMPILE, str(tmp), AGENT_DIR, *map(str, AGENT_MODULES)]
        try:
            subprocess.run(
                argv,
                env={"PATH": "/usr/bin:/bin"},
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=60,
                check=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            logger.warning(
                "agent bytecode not compiled", extra={"python": python, "error": str(exc)}
            )
            return None
        digest = hashlib.sha256()
        for item in sorted(tmp.iterdir()):
            digest.update(item.name.encode() + b"\0" + item.read_bytes())
            item.chmod(0o644)
        target = base / digest.hexdigest()[:16]
        if not target.is_dir():
            tmp.chmod(0o755)  # read by the sandbox user through the bind
            tmp.rename(target)
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # already gone if it became the target


def instance_of(state_dir: Path) -> str:
    """The instance id of the daemon that owns `state_dir`: part of every host-wide name it
    creates or reconciles (runtime root, cgroup parents, id-range claims, docker labels), so
    two daemons on one host never touch each other's sandboxes."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:16]


def make_state_dirs(state_dir: Path) -> None:
    """The state dir and sandboxes/, 0700 root: sandboxes reach what they need by mounts."""
    for path in (state_dir, state_dir / "sandboxes"):
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.chmod(0o700)


def sandbox_dir(state_dir: Path, name: str) -> Path:
    if "/" in name or name in ("", ".", ".."):
        raise ValueError("bad sandbox dir name")
    return state_dir / "sandboxes" / name


def make_sandbox_dir(sdir: Path) -> None:
    sdir.mkdir(mode=0o700)


def make_private_dir(path: Path, owner: tuple[int, int], mode: int = 0o700) -> None:
    path.mkdir(mode=mode)
    os.chown(path, *owner)
    path.chmod(mode)


def remove_sandbox_dir(sdir: Path) -> None:
    if workspace.is_mounted(sdir / "data"):
        raise RuntimeFailure(f"{sdir / 'data'} is still mounted; not removing {sdir}")
    shutil.rmtree(sdir, ignore_errors=True)


def disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, RuntimeFailure) and "No space left on device" in str(exc)


async def all_or_nothing(
    create: Coroutine[Any, Any, None], undo: Callable[[], Awaitable[None]]
) -> None:
    """Run `create` to completion even when the caller is cancelled (its steps run in
    threads that cannot be interrupted), then undo a cancelled create."""
    task = asyncio.ensure_future(create)  # scoped, not background: awaited whatever happens
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.shield(task)
        await asyncio.shield(undo())
        raise
