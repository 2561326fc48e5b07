"""SECURITY.md generation: the pytest plugin's rows (tests/security_report.py) and the
generator (scripts/gen_security.py) that turns them into the document's generated sections."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_security", ROOT / "scripts/gen_security.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_security"] = module
    spec.loader.exec_module(module)
    return module


gen = _load_generator()

DOC = """# Security

Hand-written prose | with a pipe, kept as it is.

<!-- generated:header -->
stale header
<!-- /generated:header -->

## Attacks

Prose between sections.
<!-- generated:attacks -->
| stale | table |
<!-- /generated:attacks -->

<!-- generated:runtime -->
<!-- /generated:runtime -->

## Egress
<!-- generated:egress -->
<!-- /generated:egress -->

## Faults
<!-- generated:faults -->
<!-- /generated:faults -->

## Not (yet)

- known limits stay.
"""


def case(**kw: Any) -> dict[str, Any]:
    row = {
        "kind": "case",
        "suite": "adversarial",
        "module": "test_attacks.py",
        "test": "test_attack",
        "backend": "oci",
        "duration_s": 0.01,
        "expected": "",
        "observed": "",
        "outcome": "held",
        "figures": {},
    }
    row.update(kw)
    row.setdefault("nodeid", f"tests/x/{row['module']}::{row['test']}[{row['case']}]")
    return row


ROWS = [
    {
        "kind": "session",
        "args": ["-p", "no:cacheprovider", "tests/adversarial"],
        "private_netns": False,
        "cpus": 2,
        "mem_gib": 23.5,
        "kernel": "6.1.0",
        "python": "3.12.1",
    },
    {"kind": "session", "args": ["tests/egress"], "private_netns": True},
    case(case="mount_tmpfs", description="mount a tmpfs", expected="EPERM", observed="EPERM"),
    case(case="clone3", description="clone3", expected="ENOSYS", observed="ENOSYS"),
    case(
        module="test_escapes.py",
        test="test_zombie_flood_is_reaped",
        case="test_zombie_flood_is_reaped",
        description="300 zombies are reaped.",
    ),
    case(
        module="test_api_hostility.py",
        test="test_oversized",
        case="test_oversized[url]",
        description="Oversized requests are refused.",
    ),
    case(
        module="test_api_hostility.py",
        test="test_oversized",
        case="test_oversized[headers]",
        description="Oversized requests are refused.",
        outcome="skipped",
        observed="needs root",
    ),
    case(
        module="test_load.py",
        test="test_concurrent_execs",
        case="test_concurrent_execs",
        description="200 execs at once.",
        figures={"output": "load: 50 sandboxes created in 3.1s", "p99_ms": 80},
        duration_s=12.5,
    ),
    case(
        module="test_faults.py",
        test="test_disk_full",
        case="test_disk_full",
        description="With the state disk full a create fails.",
    ),
    case(
        suite="runtime",
        module="test_hardening.py",
        test="test_no_network",
        case="test_no_network",
        description="no network",
    ),
    case(
        suite="egress",
        module="test_attacks.py",
        test="test_06_ip_literals",
        case="test_06_ip_literals[127.0.0.1:443]",
        description="ip literals",
        backend="proxy",
    ),
    case(
        suite="egress",
        module="test_sandbox_egress.py",
        test="test_no_route",
        case="test_no_route",
        description="Cases 18 and 24: only the relay leads out.",
    ),
]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    doc = tmp_path / "SECURITY.md"
    doc.write_text(DOC)
    return write_jsonl(tmp_path / "results.jsonl", ROWS), doc


def outside_markers(text: str) -> str:
    return gen.MARKER.sub(lambda m: m.group("open") + m.group("close"), text)


def test_renders_every_section_and_keeps_the_prose(files: tuple[Path, Path]) -> None:
    results, doc = files
    assert gen.main([str(results), str(doc)]) == 0
    text = doc.read_text()
    assert outside_markers(text) == outside_markers(DOC)
    assert "stale" not in text
    # header: date, commit, the commands (the egress one in its namespace)
    assert "_Generated 20" in text and "from commit `" in text
    assert "`pytest -p no:cacheprovider tests/adversarial` then `pytest tests/egress`" in text
    assert "(in a private network namespace)" in text
    # attacks: per-backend counts (skipped cases are not tried), the probe table, the others
    assert "**oci**: 4 attacks tried, 4 held (1 skipped)." in text
    assert "| `mount_tmpfs` | mount a tmpfs | `EPERM` | held (`EPERM`) |" in text
    assert (
        "| `test_api_hostility.py::test_oversized` | Oversized requests are refused."
        " (2 cases: `headers`, `url`) | held 1/2 |"
    ) in text
    # runtime
    assert "| `test_hardening.py::test_no_network` | no network | held |" in text
    # egress: case numbers from the test name or the docstring, proxy-level backend
    assert "Attack cases of docs/egress.md covered: 3 (6, 18, 24)" in text
    assert "| 6 | `test_attacks.py::test_06_ip_literals` |" in text
    assert "| proxy | held |" in text
    assert "| 18, 24 | `test_sandbox_egress.py::test_no_route` |" in text
    # faults and load, with the figures the tests reported
    assert "1 faults injected, 1 held; 1 load tests, 1 held." in text
    assert "12.5 s | p99_ms=80; load: 50 sandboxes created in 3.1s |" in text


def test_explicit_command_and_idempotence(files: tuple[Path, Path]) -> None:
    results, doc = files
    assert gen.main([str(results), str(doc), "--command", "scripts/test"]) == 0
    first = doc.read_text()
    assert "from the results of `scripts/test` on 2 CPUs" in first
    assert gen.main([str(results), str(doc), "--command", "scripts/test"]) == 0
    assert doc.read_text() == first


@pytest.mark.parametrize("outcome", ["FAILED"])
def test_a_failed_case_is_exit_1_and_the_document_is_untouched(
    files: tuple[Path, Path], outcome: str, capsys: pytest.CaptureFixture[str]
) -> None:
    results, doc = files
    write_jsonl(results, [*ROWS, case(case="kill_init", outcome=outcome, observed="OK")])
    assert gen.main([str(results), str(doc)]) == 1
    assert doc.read_text() == DOC
    assert "FAILED tests/x/test_attacks.py::test_attack[kill_init]" in capsys.readouterr().err


def test_xfail_is_shown_not_fatal(files: tuple[Path, Path]) -> None:
    results, doc = files
    bug = case(module="test_x.py", test="test_bug", case="test_bug", outcome="xfail")
    write_jsonl(results, [*ROWS, bug])
    assert gen.main([str(results), str(doc)]) == 0
    assert "known bug (xfail) 1/1" in doc.read_text()


def test_no_results_and_broken_markers(files: tuple[Path, Path], tmp_path: Path) -> None:
    results, doc = files
    empty = write_jsonl(tmp_path / "empty.jsonl", ROWS[:1])
    assert gen.main([str(empty), str(doc)]) == 1
    assert gen.main([str(tmp_path / "missing.jsonl"), str(doc)]) == 2
    doc.write_text(DOC.replace("<!-- /generated:egress -->\n", ""))
    assert gen.main([str(results), str(doc)]) == 2
    doc.write_text(DOC + "<!-- generated:other -->\n<!-- /generated:other -->\n")
    assert gen.main([str(results), str(doc)]) == 2


def test_the_plugin_writes_one_row_per_case(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A tiny adversarial suite run through the real plugin: passed, failed, skipped,
    parametrised and security_record cases become rows; other tests none."""
    out = tmp_path / "rows.jsonl"
    monkeypatch.setenv("SANDBOXD_SECURITY_RESULTS", str(out))
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    pytester.makepyfile(
        **{
            "tests/adversarial/test_x.py": '''
import pytest

def test_holds():
    """Something holds. Not this sentence."""
    print("figure: 42")

def test_fails():
    assert False

@pytest.mark.skip(reason="not here")
def test_skipped():
    pass

@pytest.mark.parametrize("backend_name", ["oci"])
@pytest.mark.parametrize("n", [1, 2])
def test_param(backend_name, n, record_property):
    record_property("n", n)

def test_records(security_record):
    security_record("a", "EPERM", "EPERM", True, description="try a")
    security_record("b", "EPERM", "OK", False, backend="docker")
''',
            "tests/other/test_y.py": "def test_ignored():\n    pass\n",
            "tests/egress/test_e.py": """
import pytest

@pytest.fixture
def daemon():
    return None

def test_proxy_level():
    pass

def test_through_a_daemon(daemon):
    pass
""",
        }
    )
    result = pytester.runpytest_subprocess("-p", "tests.security_report", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=7, failed=1, skipped=1)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["kind"] == "session"
    cases = {r["case"]: r for r in rows[1:]}
    assert sorted(cases) == [
        "a",
        "b",
        "test_fails",
        "test_holds",
        "test_param[1]",
        "test_param[2]",
        "test_proxy_level",
        "test_skipped",
        "test_through_a_daemon",
    ]
    assert cases["test_holds"]["description"] == "Something holds."
    assert cases["test_holds"]["figures"] == {"output": "figure: 42"}
    assert cases["test_holds"]["suite"] == "adversarial"
    assert cases["test_fails"]["outcome"] == "FAILED"
    assert cases["test_skipped"]["outcome"] == "skipped"
    assert cases["test_skipped"]["observed"] == "not here"
    assert cases["test_param[2]"]["figures"] == {"n": 2}
    assert cases["test_param[2]"]["backend"] == "oci"
    a, b = cases["a"], cases["b"]
    assert (a["expected"], a["observed"], a["outcome"], a["description"]) == (
        "EPERM",
        "EPERM",
        "held",
        "try a",
    )
    assert (b["outcome"], b["backend"]) == ("FAILED", "docker")
    # egress: the proxy alone, or the backend of the daemon the case ran against
    assert (cases["test_proxy_level"]["suite"], cases["test_proxy_level"]["backend"]) == (
        "egress",
        "proxy",
    )
    assert cases["test_through_a_daemon"]["backend"] == "oci"
