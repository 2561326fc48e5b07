"""The Agents SDK adapter's tests use tests/api's real daemon (a subprocess with runc
sandboxes on a unix socket)."""

from tests.api.conftest import DaemonHandle, daemon

__all__ = ["DaemonHandle", "daemon"]
