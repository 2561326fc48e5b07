"""Shared test guards: a clean environment, and root/docker tests that fail (not skip) in CI."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests import dockerd

STRIPPED_ENV = ("NOTIFY_SOCKET", "DOCKER_HOST", "JOURNAL_STREAM")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key in STRIPPED_ENV or key.lower().endswith("_proxy"):
            monkeypatch.delenv(key, raising=False)


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
