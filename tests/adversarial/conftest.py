"""The adversarial suite reuses the runtime contract suite's backends and the API suite's
daemon: the fixtures are imported, not copied, so a new backend joins both suites at once."""

from __future__ import annotations

from tests.api.conftest import client, container, daemon, raw
from tests.runtime.conftest import (
    backend,
    backend_name,
    module_backend,
    run_resources,
    shared_sandbox,
    sid,
)

__all__ = [
    "backend",
    "backend_name",
    "client",
    "container",
    "daemon",
    "module_backend",
    "raw",
    "run_resources",
    "shared_sandbox",
    "sid",
]
