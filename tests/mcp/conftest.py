"""The MCP server's tests use tests/api's real daemon (runc sandboxes on a unix socket)."""

from tests.api.conftest import DaemonHandle, daemon

__all__ = ["DaemonHandle", "daemon"]
