"""Who is calling: the peer uid on the unix socket (SO_PEERCRED), a bearer key on TCP.

The API boundary this is part of (ownership, quotas, input caps) is in docs/security-model.md.
"""

from __future__ import annotations

import socket
import struct

from aiohttp import web

from daemon import keys
from daemon.config import ServerConfig
from daemon.containers import Caller
from daemon.errors import Unauthorized

UCRED = struct.Struct("3i")


def identify(request: web.Request, cfg: ServerConfig) -> Caller:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None and sock.family == socket.AF_UNIX:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, UCRED.size)
        _pid, uid, _gid = UCRED.unpack(raw)
        return Caller(owner=f"uid:{uid}", admin=uid == 0)
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() == "bearer" and key:
        for owner, stored_hash in cfg.api_keys.items():
            if keys.matches(key, stored_hash):
                return Caller(owner=f"key:{owner}", admin=owner in cfg.admin_owners)
    raise Unauthorized("Incorrect or missing API key. Send 'Authorization: Bearer <key>'.")
