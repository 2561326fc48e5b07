"""The control channel between the daemon and the proxy process.

A SOCK_SEQPACKET socketpair made by the daemon; the proxy gets its end as an inherited fd.
One message per packet: a JSON object (<= MAX_MESSAGE bytes), with at most one file
descriptor attached (a sandbox's listening socket). Every request carries an "id" and gets
exactly one reply with the same id: {"id": n, "ok": true, ...} or {"id": n, "error": "..."}.

Requests (daemon -> proxy):
  {"op": "ping"}                               -> {"stats": {...}} (counters since start)
  {"op": "attach", "sandbox": id, "policy": {...}} + fd
                                               the proxy serves that listening socket
  {"op": "detach", "sandbox": id}              closes it and every connection of it

Secret values travel only over this process-private channel. The channel's end is the
proxy's lifeline: when the daemon goes away, the proxy exits.
"""

from __future__ import annotations

import array
import json
import socket
from typing import Any

MAX_MESSAGE = 1 << 20
MAX_FDS = 1


class WireError(Exception):
    """A malformed or oversized control message, or a closed channel."""


def encode(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise WireError(f"control message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    return data


def send(sock: socket.socket, message: dict[str, Any], fd: int | None = None) -> None:
    data = encode(message)
    if fd is None:
        sock.sendmsg([data])
    else:
        fds = array.array("i", [fd])
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])


def decode(
    data: bytes, ancdata: list[tuple[int, int, bytes]], flags: int
) -> tuple[dict[str, Any], int | None]:
    """Parse one received packet; closes any fds beyond the first one and raises on junk."""
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % array.array("i").itemsize
            fds.extend(array.array("i", payload[:usable]))
    try:
        if not data:
            raise WireError("control channel closed")
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise WireError("truncated control message")
        if len(fds) > MAX_FDS:
            raise WireError("too many fds in one control message")
        try:
            message = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise WireError(f"control message is not JSON: {type(exc).__name__}") from None
        if not isinstance(message, dict):
            raise WireError("control message is not an object")
    except WireError:
        for fd in fds:
            socket.close(fd)
        raise
    return message, (fds[0] if fds else None)


def recv(sock: socket.socket) -> tuple[dict[str, Any], int | None]:
    data, ancdata, flags, _ = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(4 * MAX_FDS))
    return decode(data, ancdata, flags)
