"""The in-sandbox agent as both backends start it: its files on the host (bound read-only
into every sandbox), its bytecode, and the command line and environment it starts with."""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from sandbox.spec import AGENT_DIR, AGENT_LAZY_MODULES, AGENT_PYCACHE

logger = logging.getLogger(__name__)

AGENT_SCRIPT = Path(__file__).resolve().parent.parent / "agent" / "agent.py"
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


# The agent's command line and environment on both backends (runc's process.args, the
# container's command). Imported (not run as a script) so that a matching
# __pycache__/agent.*.pyc is used.
AGENT_ARGV = [
    "/usr/bin/python3",
    "-I",
    "-S",
    "-B",
    "-c",
    f"import sys; sys.path.insert(0, {AGENT_DIR!r}); import agent; agent.main()",
]
AGENT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"]
# An image's environment (its image.json `env`: a venv first on PATH, say) reaches the agent
# as IMAGE_ENV_PREFIX + name; the agent moves it into every command's environment.
IMAGE_ENV_PREFIX = "SANDBOXD_IMAGE_ENV_"


def agent_env(image_env: Mapping[str, str]) -> list[str]:
    """The agent's environment on a root whose image sets `image_env` (checked when the
    root is loaded: names are identifiers, values have no NUL)."""
    return [*AGENT_ENV, *(f"{IMAGE_ENV_PREFIX}{k}={v}" for k, v in sorted(image_env.items()))]
