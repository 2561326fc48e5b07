"""Pytest plugin: one JSON line per security-relevant test case, for SECURITY.md.

Registered by tests/conftest.py. When `SANDBOXD_SECURITY_RESULTS` names a file, every test
under tests/adversarial/, tests/egress/, the hardening/isolation/limits modules of
tests/runtime/ and the host-boundary modules of any suite appends its result there (one
line per item and parametrised case); unset, the plugin does nothing. Several pytest runs
may append to the same file (the main run and the egress run in its own network
namespace); scripts/gen_security.py turns it into SECURITY.md's generated tables.

A test that checks many cases at once, or wants its expected/observed outcome in the table,
calls the `security_record` fixture once per case; a test that never calls it gets one row
(case = its parametrised id, description = its docstring's first sentence). Numbers: the
fixture's `figures`, `record_property` key/values, and a passing test's captured stdout
(load and fault tests print their measurements) go into the row as well.
"""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

ENV = "SANDBOXD_SECURITY_RESULTS"
RUNTIME_MODULES = ("test_hardening.py", "test_isolation.py", "test_limits.py")
# The host boundary (SECURITY.md), wherever its tests live: runtime, daemon, whole daemons.
HOST_MODULES = ("test_host_boundary.py", "test_migration.py")
# Fixtures whose parameter is a runtime backend name (tests/runtime/conftest.py).
BACKEND_PARAMS = ("backend_name", "module_backend")
DEFAULT_BACKEND = "oci"  # the daemon's default runtime.backend (daemon/config.py)
MAX_OUTPUT = 600


@dataclass
class Record:
    case: str
    expected: str
    observed: str
    held: bool
    backend: str | None = None
    description: str = ""
    figures: dict[str, Any] = field(default_factory=dict)


class SecurityRecord(Protocol):
    """The `security_record` fixture's type."""

    def __call__(
        self,
        case: str,
        expected: object,
        observed: object,
        held: bool,
        backend: str | None = None,
        description: str = "",
        **figures: Any,
    ) -> None: ...


_RECORDS = pytest.StashKey[list[Record]]()
_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def suite_of(nodeid: str) -> str | None:
    """adversarial, egress, runtime, host, or None for a test outside SECURITY.md's suites."""
    parts = Path(nodeid.split("::", 1)[0]).parts
    if not parts or parts[0] != "tests":
        return None
    rest = parts[1:]
    if len(rest) == 2 and rest[1] in HOST_MODULES:
        return "host"
    if len(rest) >= 2 and rest[0] in ("adversarial", "egress"):
        return rest[0]
    if len(rest) == 2 and rest[0] == "runtime" and rest[1] in RUNTIME_MODULES:
        return "runtime"
    return None


def describe(item: pytest.Item) -> str:
    """The first sentence of the test's docstring, or its name in words."""
    doc = getattr(getattr(item, "function", None), "__doc__", None) or ""
    para = " ".join(doc.strip().split("\n\n", 1)[0].split())
    if para:
        # A sentence ends at a period followed by a capital (so "e.g. dbus" does not end one).
        match = re.match(r"(.+?\.)(\s+[A-Z(`]|$)", para)
        return match.group(1) if match else para
    name = getattr(item, "originalname", None) or item.name.split("[", 1)[0]
    name = re.sub(r"^test_(\d+[a-z]?_)?", "", name)
    return name.replace("_", " ")


def backend_of(item: pytest.Item) -> str:
    params: dict[str, Any] = getattr(getattr(item, "callspec", None), "params", {})
    for key in BACKEND_PARAMS:
        if isinstance(params.get(key), str):
            return str(params[key])
    marker = item.get_closest_marker("security_backend")
    if marker and marker.args:
        return str(marker.args[0])
    if suite_of(item.nodeid) == "egress" and "daemon" not in getattr(item, "fixturenames", ()):
        return "proxy"  # proxy-level case: the proxy process alone, no sandbox backend
    return DEFAULT_BACKEND  # the daemon's backend


def case_of(item: pytest.Item, backend: str) -> str:
    """The test's name and parametrised id, without the backend (a column of its own)."""
    name = getattr(item, "originalname", None) or item.name.split("[", 1)[0]
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        ident = str(callspec.id)
    else:  # e.g. schemathesis' items: no callspec, the operation in the name
        ident = item.name[len(name) + 1 : -1] if item.name.startswith(f"{name}[") else ""
    if any(key in getattr(callspec, "params", {}) for key in BACKEND_PARAMS):
        if ident == backend:
            ident = ""
        elif ident.startswith(backend + "-"):
            ident = ident[len(backend) + 1 :]
        elif ident.endswith("-" + backend):
            ident = ident[: -len(backend) - 1]
    return f"{name}[{ident}]" if ident else str(name)


def private_netns() -> bool:
    try:
        return [name for _, name in socket.if_nameindex()] == ["lo"]
    except OSError:
        return False


def write(rows: list[dict[str, Any]]) -> None:
    path = os.environ.get(ENV)
    if not path or not rows:
        return
    data = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "security_backend(name): the backend a security case ran against"
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    meminfo = Path("/proc/meminfo")
    mem_kib = 0
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    write(
        [
            {
                "kind": "session",
                "args": list(session.config.invocation_params.args),
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "private_netns": private_netns(),
                "python": platform.python_version(),
                "kernel": platform.release(),
                "cpus": os.cpu_count(),
                "mem_gib": round(mem_kib / (1 << 20), 1),
                "euid": os.geteuid(),
            }
        ]
    )


@pytest.fixture
def security_record(request: pytest.FixtureRequest) -> SecurityRecord:
    """`security_record(case, expected, observed, held, backend=None, description="",
    **figures)`: one row of SECURITY.md's tables for the running test."""
    records = request.node.stash.setdefault(_RECORDS, [])

    def record(
        case: str,
        expected: object,
        observed: object,
        held: bool,
        backend: str | None = None,
        description: str = "",
        **figures: Any,
    ) -> None:
        records.append(
            Record(case, str(expected), str(observed), held, backend, description, figures)
        )

    return record


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not os.environ.get(ENV) or suite_of(item.nodeid) is None:
        return
    reports = item.stash.setdefault(_REPORTS, {})
    reports[report.when] = report
    if report.when == "teardown":
        write(rows_for(item, reports))


def outcome_of(reports: dict[str, pytest.TestReport]) -> str:
    if any(r.failed for r in reports.values()):
        return "FAILED"
    if any(hasattr(r, "wasxfail") for r in reports.values()):
        return "xfail"
    if any(r.skipped for r in reports.values()):
        return "skipped"
    return "held"


def rows_for(item: pytest.Item, reports: dict[str, pytest.TestReport]) -> list[dict[str, Any]]:
    outcome = outcome_of(reports)
    call = reports.get("call")
    duration = round(sum(r.duration for r in reports.values()), 3)
    figures: dict[str, Any] = {str(k): v for k, v in item.user_properties}
    if call is not None and call.passed and call.capstdout.strip():
        figures["output"] = call.capstdout.strip()[:MAX_OUTPUT]
    skip_reason = ""
    for r in reports.values():
        if r.skipped and isinstance(r.longrepr, tuple):
            skip_reason = str(r.longrepr[2]).removeprefix("Skipped: ")
    backend = backend_of(item)
    base: dict[str, Any] = {
        "kind": "case",
        "suite": suite_of(item.nodeid),
        "module": Path(item.path).name,
        "test": getattr(item, "originalname", None) or item.name.split("[", 1)[0],
        "nodeid": item.nodeid,
        "backend": backend,
        "duration_s": duration,
    }
    rows: list[dict[str, Any]] = []
    records = item.stash.get(_RECORDS, [])
    for rec in records:
        rows.append(
            {
                **base,
                "case": rec.case,
                "description": rec.description or describe(item),
                "backend": rec.backend or base["backend"],
                "expected": rec.expected,
                "observed": rec.observed,
                "outcome": outcome if outcome != "held" else ("held" if rec.held else "FAILED"),
                "figures": {**figures, **rec.figures},
            }
        )
    if not records:
        rows.append(
            {
                **base,
                "case": case_of(item, backend),
                "description": describe(item),
                "expected": "",
                "observed": skip_reason,
                "outcome": outcome,
                "figures": figures,
            }
        )
    return rows


__all__ = ["ENV", "Record", "SecurityRecord", "security_record", "suite_of"]
