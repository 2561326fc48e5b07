"""What both runtime backends share on the host: the per-sandbox directory
(<state_dir>/sandboxes/<id>/), the agent's files, and the all-or-nothing create."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from sandbox.errors import RuntimeFailure
from sandbox.oci import workspace

AGENT_SCRIPT = Path(__file__).resolve().parent / "agent" / "agent.py"
INTERPRETER_SCRIPT = AGENT_SCRIPT.with_name("interpreter.py")
AGENT_READY_TIMEOUT_S = 15.0


def sandbox_dir(state_dir: Path, sandbox_id: str) -> Path:
    if "/" in sandbox_id or sandbox_id in ("", ".", ".."):
        raise ValueError("bad sandbox id")
    return state_dir / "sandboxes" / sandbox_id


def make_sandbox_dir(sdir: Path) -> None:
    sdir.mkdir()
    sdir.chmod(0o711)


def make_private_dir(path: Path, owner: tuple[int, int]) -> None:
    path.mkdir(mode=0o700)
    os.chown(path, *owner)


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
