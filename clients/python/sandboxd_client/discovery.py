"""Where the daemon is: the rules the `sandboxd` command line has always used.

Explicit arguments win; then $SANDBOXD_URL (with $SANDBOXD_API_KEY) for TCP, unless a socket
was named; then $SANDBOXD_SOCKET; then the daemon's default socket for this user (root's
/run/sandboxd/sandboxd.sock, else $XDG_RUNTIME_DIR/sandboxd.sock or
/tmp/sandboxd-UID/sandboxd.sock), falling back to the system daemon's socket for a user who
has no daemon of their own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

SYSTEM_SOCKET = "/run/sandboxd/sandboxd.sock"


@dataclass(frozen=True)
class Target:
    """A unix socket path, or a base URL plus an optional bearer key."""

    socket: str = ""
    url: str = ""
    api_key: str = ""

    def describe(self) -> str:
        return f"url {self.url}" if self.url else f"socket {self.socket}"


def default_socket(euid: int, env: Mapping[str, str]) -> str:
    """The socket a daemon started by `euid` listens on when its config names none."""
    if euid == 0:
        return SYSTEM_SOCKET
    runtime_dir = env.get("XDG_RUNTIME_DIR") or f"/tmp/sandboxd-{euid}"  # noqa: S108
    return f"{runtime_dir}/sandboxd.sock"


def client_socket(euid: int, env: Mapping[str, str]) -> str:
    """The daemon's own default; for a non-root user without a daemon of their own, the
    system daemon's socket."""
    own = default_socket(euid, env)
    system = default_socket(0, env)
    if euid != 0 and not os.path.exists(own) and os.path.exists(system):
        return system
    return own


def discover(
    socket: str | None = None,
    url: str | None = None,
    api_key: str | None = None,
    env: Mapping[str, str] | None = None,
    euid: int | None = None,
) -> Target:
    """The target for these arguments (any may be None), the environment and this user."""
    if socket and url:
        raise ValueError("give either a socket or a url, not both")
    env = os.environ if env is None else env
    url = url or ("" if socket else env.get("SANDBOXD_URL", ""))
    if url:
        return Target(url=url, api_key=api_key or env.get("SANDBOXD_API_KEY", ""))
    if not socket:
        uid = os.geteuid() if euid is None else euid
        socket = env.get("SANDBOXD_SOCKET") or client_socket(uid, env)
    return Target(socket=socket)
