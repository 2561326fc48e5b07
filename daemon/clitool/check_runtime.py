"""The live part of `sandboxd check`: start and remove one real sandbox, as the daemon would.

Everything lives under a throwaway temp directory (state, runtime root, workspace image) and
a distinct cgroup parent `/sandboxd-check-<random>`, and is removed afterwards whatever
happens, so the check never touches a running daemon's sandboxes.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from sandbox.agent_client import AgentLimits
from sandbox.cgroups import CgroupLayout
from sandbox.errors import SandboxError
from sandbox.idranges import IdRangeSettings
from sandbox.oci.runtime import OciRuntime, OciSettings, forget_instance
from sandbox.seccomp import load_profile
from sandbox.spec import MEMORY_TIERS, Limits, SandboxSpec

TIMEOUT_S = 60.0
SMALL = Limits(pids=64, workspace_bytes=16 << 20, tmp_bytes=16 << 20, fsize_bytes=16 << 20)


class LiveCheckFailed(Exception):
    """The sandbox could not be started (or not removed); the message says where."""


def live_sandbox(binary: str, ids: IdRangeSettings, seccomp_profile: str) -> float:
    """Start one sandbox until its agent answers, remove it; return the start time in ms."""
    root = Path(tempfile.mkdtemp(prefix="sbxd-check-"))
    root.chmod(0o711)  # sandboxes run as unprivileged uids and must traverse to their rootfs
    parent = f"/sandboxd-check-{secrets.token_hex(4)}"
    instance = f"check-{secrets.token_hex(4)}"
    try:
        return asyncio.run(
            asyncio.wait_for(
                _start_and_remove(root, parent, instance, binary, ids, seccomp_profile),
                TIMEOUT_S,
            )
        )
    except TimeoutError:
        raise LiveCheckFailed(f"no sandbox answered within {TIMEOUT_S:g}s") from None
    finally:
        _cleanup(root, parent, instance, binary)


async def _start_and_remove(
    root: Path, parent: str, instance: str, binary: str, ids: IdRangeSettings, seccomp: str
) -> float:
    try:
        profile = load_profile(Path(seccomp) if seccomp else None)
        settings = OciSettings(
            state_dir=root / "state",
            runtime_root=root / "runc",
            binary=binary,
            cgroup_parent=parent,
            instance=instance,
            ids=ids,
            agent_limits=AgentLimits(connections=1),
            threads=2,
        )
        runtime = OciRuntime(settings, profile)
    except (SandboxError, OSError) as exc:
        raise LiveCheckFailed(str(exc)) from exc
    sid = f"check-{secrets.token_hex(6)}"
    created = False
    try:
        await runtime.start()
        started = time.monotonic()
        created = True  # create() undoes itself on failure; destroy() is idempotent anyway
        await runtime.create(SandboxSpec(sid, MEMORY_TIERS["1g"], SMALL))
        elapsed_ms = (time.monotonic() - started) * 1000
        if not await runtime.is_running(sid):
            raise LiveCheckFailed("the sandbox started but is not running")
        created = False
        await runtime.destroy(sid)
        return elapsed_ms
    except (SandboxError, OSError) as exc:
        raise LiveCheckFailed(_first_line(str(exc))) from exc
    finally:
        if created:
            with contextlib.suppress(Exception):
                await runtime.destroy(sid)
        await runtime.close()


def _first_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0][:400] if lines else "unknown error"


def _cleanup(root: Path, parent: str, instance: str, binary: str) -> None:
    """Best effort, after the runtime's own destroy: runtime state, mounts, cgroups, files."""
    for runc_root in (root / "runc").glob("*/state"):
        for sid in [p.name for p in runc_root.iterdir() if p.is_dir()]:
            subprocess.run(
                [binary, "--root", str(runc_root), "delete", "--force", sid],
                capture_output=True, check=False, timeout=30,
            )  # fmt: skip
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f]
    for mountpoint in sorted((m for m in mounts if m.startswith(f"{root}/")), reverse=True):
        # The root's bind under runc/<instance>/ and the workspace under state/.
        subprocess.run(["umount", "-l", mountpoint], capture_output=True, check=False, timeout=30)
    with contextlib.suppress(Exception):
        forget_instance(root / "runc", [parent], instance)  # id-range claims too
    with contextlib.suppress(Exception):
        layout = CgroupLayout.detect()
        for directory in layout.dirs(parent):
            for sub in sorted(directory.glob("**/"), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    sub.rmdir()
    shutil.rmtree(root, ignore_errors=True)
