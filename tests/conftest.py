"""Shared test guards: a clean environment, and root/docker tests that fail (not skip) in CI."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bench import dockerd

# SECURITY.md's tables: one JSON line per security case when SANDBOXD_SECURITY_RESULTS is set.
pytest_plugins = ["tests.security_report", "tests.apifixtures"]

STRIPPED_ENV = ("NOTIFY_SOCKET", "DOCKER_HOST", "JOURNAL_STREAM")
# The runtime contract suite runs whole on docker. Of the API, adversarial and client suites
# (the same code above the runtime seam on both backends), the default run takes these modules
# on docker too, to keep the suite's time in budget; SANDBOXD_TEST_DOCKER=all takes every module
# (all pass on docker; the rest are API-level: fuzzing, pagination, error shapes, file store).
DOCKER_MODULES = frozenset(
    {
        "tests/api/test_core.py",
        "tests/api/test_containers.py",
        "tests/api/test_exec.py",
        "tests/api/test_files.py",
        "tests/api/test_code.py",
        "tests/api/test_processes.py",
        "tests/api/test_ports.py",
        "tests/api/test_terminals.py",
        "tests/api/test_limits.py",
        "tests/api/test_host_boundary.py",
        "tests/client/test_attach.py",
        "tests/client/test_port_forward.py",
        "tests/client/test_terminal_cli.py",
        "tests/adversarial/test_attacks.py",
        "tests/adversarial/test_escapes.py",
        "tests/adversarial/test_faults.py",
    }
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key in STRIPPED_ENV or key.lower().endswith("_proxy"):
            monkeypatch.delenv(key, raising=False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("SANDBOXD_TEST_DOCKER") == "all":
        return
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        module = item.nodeid.split("::", 1)[0]
        suite = module.startswith(
            ("tests/api/", "tests/adversarial/", "tests/client/", "tests/agents/", "tests/mcp/")
        )
        on_docker = "docker" in params.values()
        (drop if suite and on_docker and module not in DOCKER_MODULES else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_runtest_setup(item: pytest.Item) -> None:
    ci = os.environ.get("CI") == "true"
    if item.get_closest_marker("root") and os.geteuid() != 0:
        if ci:
            pytest.fail("this test needs root, and CI runs as root")
        pytest.skip("needs root")
    if item.get_closest_marker("docker"):
        reason = dockerd.why_unavailable()
        if reason is not None:
            if ci:
                pytest.fail(f"this test needs docker, and CI has it: {reason}")
            pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[str]:
    """A Docker engine URL for the session: the host's, or a private dockerd started here."""
    reason = dockerd.why_unavailable()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"docker needed: {reason}")
        pytest.skip(reason)
    with dockerd.engine() as url:
        yield url
