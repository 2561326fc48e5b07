"""The client's tests use tests/api's real daemon (a subprocess with runc sandboxes, on a unix
socket and on loopback TCP with keys alice and bob); test_logic.py needs none."""

from tests.api.conftest import DaemonHandle, daemon

__all__ = ["DaemonHandle", "daemon"]
