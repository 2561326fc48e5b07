"""The client's tests use tests/api's real daemon (a subprocess with runc sandboxes, on a unix
socket and on loopback TCP with keys alice and bob); test_logic.py needs none. `sbx` is a
blocking client on the unix socket, `asbx` an asyncio one on TCP with alice's key
(test_daemon.py parametrises its own over both transports)."""

from collections.abc import AsyncIterator, Iterator

import pytest
import sandboxd_client as sc

from tests.api.conftest import DaemonHandle, daemon

__all__ = ["DaemonHandle", "daemon"]


@pytest.fixture
def sbx(daemon: DaemonHandle) -> Iterator[sc.Client]:
    with sc.Client(socket=daemon.socket, env={}) as client:
        yield client


@pytest.fixture
async def asbx(daemon: DaemonHandle) -> AsyncIterator[sc.AsyncClient]:
    async with sc.AsyncClient(url=daemon.tcp_url, api_key=daemon.keys["alice"], env={}) as client:
        yield client
