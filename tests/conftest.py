"""Shared test guards: a clean environment, and root tests that fail (not skip) in CI."""

from __future__ import annotations

import os

import pytest

# SECURITY.md's tables: one JSON line per security case when SANDBOXD_SECURITY_RESULTS is set.
pytest_plugins = ["tests.security_report"]

STRIPPED_ENV = ("NOTIFY_SOCKET", "DOCKER_HOST", "JOURNAL_STREAM")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key in STRIPPED_ENV or key.lower().endswith("_proxy"):
            monkeypatch.delenv(key, raising=False)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") and os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("this test needs root, and CI runs as root")
        pytest.skip("needs root")
