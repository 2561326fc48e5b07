"""Runtime contract: the egress seam. egress_dir() is the agent's private host dir, bound
read-only at EGRESS_DIR; a socket the host puts there is what the agent's 127.0.0.1:3128 relay
reaches; SandboxSpec.trust_bundle replaces the system CA bundle, read-only."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from pathlib import Path

import pytest

from sandbox.spec import EGRESS_SOCKET, SYSTEM_CA_BUNDLE
from tests.runtime.conftest import Harness, check, sandbox_uid, sh, spec

pytestmark = pytest.mark.root

RELAY_PROBE = """
import socket
s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
s.sendall(b"ping")
print(s.recv(64).decode())
"""


async def test_egress_dir_socket_is_reached_through_the_relay(
    backend: Harness, tmp_path: Path
) -> None:
    rt = backend.runtime
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\ntest\n-----END CERTIFICATE-----\n")
    bundle.chmod(0o644)
    s = spec(trust_bundle=bundle)
    await rt.create(s)
    sid = s.sandbox_id
    edir = rt.egress_dir(sid)
    st = edir.stat()
    assert stat.S_IMODE(st.st_mode) == 0o700
    agent_uid = int(await check(rt, sid, "id -u"))
    assert agent_uid == sandbox_uid(backend, sid)
    assert st.st_uid != 0  # the sandbox user's own host uid (mapped or not)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(4)
        writer.write(b"pong:" + data)
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(answer, path=str(edir / "proxy.sock"))
    os.chmod(edir / "proxy.sock", 0o666)
    try:
        await rt.agent(sid).configure({}, EGRESS_SOCKET)
        assert await check(rt, sid, "python3", stdin=RELAY_PROBE) == "pong:ping\n"
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()
    _, err, outcome = await sh(rt, sid, "touch /.sandboxd/egress/x")
    assert outcome.exit_code == 1 and "Read-only file system" in err
    assert await check(rt, sid, f"cat {SYSTEM_CA_BUNDLE}") == bundle.read_text()
    _, err, outcome = await sh(rt, sid, f"echo x >> {SYSTEM_CA_BUNDLE}")
    assert outcome.exit_code != 0
