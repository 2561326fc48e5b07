"""The agent's bytecode: compiled once by the sandbox's Python, used by the agent's import
(no compile at each sandbox start), and never trusted over a source it does not match."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sandbox.host.agent import AGENT_MODULES, SANDBOX_PYTHON, agent_bytecode, agent_pycache
from sandbox.spec import AGENT_DIR, AGENT_LAZY_MODULES, AGENT_PYCACHE

pytestmark = pytest.mark.skipif(not Path(SANDBOX_PYTHON).exists(), reason="no /usr/bin/python3")


def _import_trace(agent_dir: Path, module: str = "agent") -> str:
    """Import the agent as the sandbox does (-I -S -B), then `module` as the agent does on
    first use, verbosely: which code object loaded for `module`."""
    code = f"import sys; sys.path.insert(0, {str(agent_dir)!r}); import agent"
    if module != "agent":
        code += f"; agent.load_module({module!r})"
    proc = subprocess.run(
        [SANDBOX_PYTHON, "-I", "-S", "-B", "-v", "-c", code],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return next(
        line
        for line in proc.stderr.splitlines()
        if "code object from" in line and f"{module}." in line.rsplit("/", 1)[-1]
    )


def _sandbox_view(tmp: Path, pycache: Path) -> Path:
    """The agent dir as a sandbox sees it: the modules plus the bound __pycache__."""
    view = tmp / "view"
    view.mkdir()
    for module in AGENT_MODULES:
        shutil.copyfile(module, view / module.name)
    shutil.copytree(pycache, view / "__pycache__")
    return view


def test_the_import_uses_the_compiled_bytecode(tmp_path: Path) -> None:
    pycache = agent_bytecode(tmp_path)
    assert pycache is not None and pycache.parent == tmp_path / "agent-bytecode"
    names = sorted(p.name.split(".cpython-")[0] for p in pycache.iterdir())
    assert (
        names
        == sorted(m.stem for m in AGENT_MODULES)
        == sorted(["agent", *(name.removesuffix(".py") for name in AGENT_LAZY_MODULES)])
    )
    assert pycache.stat().st_mode & 0o777 == 0o755
    view = _sandbox_view(tmp_path, pycache)
    for module in AGENT_MODULES:
        assert f"__pycache__/{module.stem}.cpython-" in _import_trace(view, module.stem)


def test_the_bytecode_names_the_modules_as_the_sandbox_sees_them(tmp_path: Path) -> None:
    pycache = agent_bytecode(tmp_path)
    assert pycache is not None
    code = (
        "import marshal, sys\n"
        "for path in sys.argv[1:]:\n"
        "    with open(path, 'rb') as f:\n"
        "        print(marshal.loads(f.read()[16:]).co_filename)\n"
    )
    pycs = sorted(str(p) for p in pycache.iterdir())
    shown = subprocess.run(
        [SANDBOX_PYTHON, "-I", "-S", "-c", code, *pycs],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split()  # fmt: skip
    assert sorted(shown) == sorted(f"{AGENT_DIR}/{m.name}" for m in AGENT_MODULES)


def test_a_source_that_differs_is_compiled_not_matched_to_stale_bytecode(tmp_path: Path) -> None:
    pycache = agent_bytecode(tmp_path)
    assert pycache is not None
    view = _sandbox_view(tmp_path, pycache)
    for name in ("agent.py", *AGENT_LAZY_MODULES):
        with open(view / name, "a") as f:
            f.write("\n# changed\n")
        module = name.removesuffix(".py")
        assert _import_trace(view, module).endswith("code object from " + str(view / name))


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
