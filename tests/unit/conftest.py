"""Fixtures of the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from daemon.store import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh state database (the real store, on a temp file)."""
    s = Store(tmp_path / "state.db")
    await s.open()
    yield s
    await s.close()
