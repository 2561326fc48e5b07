"""The agent's bytecode: compiled once by the sandbox's Python, used by the agent's import
(no compile at each sandbox start), and never trusted over a source it does not match."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sandbox.host.agent import AGENT_SCRIPT, SANDBOX_PYTHON, agent_bytecode, agent_pycache
from sandbox.spec import AGENT_PYCACHE

pytestmark = pytest.mark.skipif(not Path(SANDBOX_PYTHON).exists(), reason="no /usr/bin/python3")


def _import_trace(agent_dir: Path) -> str:
    """Import the agent as the sandbox does (-I -S -B), verbosely: which code object loaded."""
    proc = subprocess.run(
        [SANDBOX_PYTHON, "-I", "-S", "-B", "-v", "-c",
         f"import sys; sys.path.insert(0, {str(agent_dir)!r}); import agent"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return next(
        line for line in proc.stderr.splitlines() if "code object from" in line and "agent" in line
    )


def _sandbox_view(tmp: Path, pycache: Path) -> Path:
    """The agent dir as a sandbox sees it: the script plus the bound __pycache__."""
    view = tmp / "view"
    view.mkdir()
    shutil.copyfile(AGENT_SCRIPT, view / "agent.py")
    shutil.copytree(pycache, view / "__pycache__")
    return view


def test_the_import_uses_the_compiled_bytecode(tmp_path: Path) -> None:
    pycache = agent_bytecode(tmp_path)
    assert pycache is not None and pycache.parent == tmp_path / "agent-bytecode"
    assert next(p.name for p in pycache.iterdir()).startswith("agent.cpython-")
    assert pycache.stat().st_mode & 0o777 == 0o755
    view = _sandbox_view(tmp_path, pycache)
    assert "__pycache__/agent.cpython-" in _import_trace(view)


def test_a_source_that_differs_is_compiled_not_matched_to_stale_bytecode(tmp_path: Path) -> None:
    pycache = agent_bytecode(tmp_path)
    assert pycache is not None
    view = _sandbox_view(tmp_path, pycache)
    with open(view / "agent.py", "a") as f:
        f.write("\n# changed\n")
    assert _import_trace(view).endswith("code object from " + str(view / "agent.py"))


def test_same_agent_same_directory_and_old_roots_get_no_bind(tmp_path: Path) -> None:
    first, second = agent_bytecode(tmp_path), agent_bytecode(tmp_path)
    assert first == second
    assert [p.name for p in (tmp_path / "agent-bytecode").iterdir()] == [first.name]  # type: ignore[union-attr]
    root = tmp_path / "root"
    root.mkdir()
    assert agent_pycache(tmp_path, root) == ""  # the root has no mount point for it
    (root / AGENT_PYCACHE.lstrip("/")).mkdir(parents=True)
    assert agent_pycache(tmp_path, root) == str(first)


def test_no_usable_python_means_no_bytecode(tmp_path: Path) -> None:
    assert agent_bytecode(tmp_path, python=str(tmp_path / "missing-python")) is None
