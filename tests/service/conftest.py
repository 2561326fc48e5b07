"""The in-process layer: the real `Daemon` (composition root, HTTP stack, services, store,
reaper, reconciler) on a temp unix socket and a loopback TCP port, served by an event loop in
a thread of the test process, with the in-memory `Runtime` double instead of a backend. It
needs neither root nor runc: `pytest -m "not root"` runs these with the unit tests.

The fixtures have the names and shapes of tests/api's (`daemon`, `client`, `raw`, ...), so a
test that needs no real sandbox moves between the layers by its import line alone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from daemon import config as config_mod
from daemon.composition import Daemon
from daemon.config import Config
from daemon.keys import hash_key
from tests.service.runtime_double import MemoryRuntime

# A callback that holds the daemon's loop this long fails the test: generous enough for a
# loaded CI machine, far below what a blocking call (a subprocess, a big file read, a
# sync sqlite transaction) costs.
BLOCKING_S = 0.25

CONFIG = """
state_dir = "{root}/state"
[server]
socket = "{root}/api.sock"
socket_mode = 0o600
tcp = "127.0.0.1:{port}"
api_keys = {{ alice = "{alice}", bob = "{bob}", root = "{admin}" }}
admin_owners = ["root"]
drain_timeout_s = 2.0
kill_grace_s = 0.5
cancel_timeout_s = 0.5
tasks_timeout_s = 1.0
[containers]
max_upload_bytes = {upload}
max_containers_per_owner = 150
reaper_interval_s = 0.1
memory_overcommit = 1000.0
[files]
max_file_bytes = {file}
max_owner_bytes = {owner}
min_expires_seconds = 1
sweep_interval_s = 0.5
[pool]
sizes = {{}}
[proxy]
enabled = false
"""


class InProcessDaemon:
    """A `Daemon` served by a loop in a thread of the test process; `call` runs a coroutine
    on that loop (to reach a service directly), `restart` keeps the state dir and the double's
    sandboxes, as a real restart keeps both."""

    def __init__(
        self, root: Path, runtime: MemoryRuntime, overrides: dict[str, Any] | None = None
    ) -> None:
        self.root = root
        self.runtime = runtime
        self.keys = {name: f"sk-{name}-{secrets.token_hex(8)}" for name in ("alice", "bob", "root")}
        port = _free_port()
        text = CONFIG.format(
            root=root,
            port=port,
            alice=hash_key(self.keys["alice"]),
            bob=hash_key(self.keys["bob"]),
            admin=hash_key(self.keys["root"]),
            upload=8 << 20,
            file=4 << 20,
            owner=10 << 20,
        )
        (root / "config.toml").write_text(text)
        self.config: Config = config_mod.load(root / "config.toml", overrides)
        self.socket = self.config.server.socket
        self.tcp_url = f"http://127.0.0.1:{port}"
        self._loop = asyncio.new_event_loop()
        # asyncio's debug mode: a callback that holds the loop longer than this is logged
        # (a blocking call on the event loop); `close` fails the test on any.
        self._loop.set_debug(True)
        self._loop.slow_callback_duration = BLOCKING_S
        self.blocked = _SlowCallbacks()
        logging.getLogger("asyncio").addHandler(self.blocked)
        self._thread = threading.Thread(target=self._loop.run_forever, name="daemon-loop")
        self._thread.start()
        self.daemon = self._start("boot-1")

    def _start(self, boot_id: str) -> Daemon:
        daemon = Daemon(self.config, self.socket, boot_id=boot_id, backend=self.runtime)

        async def start() -> None:
            await daemon.start()

        try:
            self.call(start())
        except BaseException:
            self.call(daemon.stop())
            raise
        return daemon

    def call[T](self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def restart(self, boot_id: str = "boot-1") -> None:
        self.call(self.daemon.stop())
        self.daemon = self._start(boot_id)

    def sdk(self, who: str | None = None, **kw: Any) -> openai.OpenAI:
        """The official SDK: on the unix socket (the test's uid) or, for `who`, on TCP with
        their key."""
        if who is not None:
            return openai.OpenAI(
                base_url=self.tcp_url + "/v1", api_key=self.keys[who], max_retries=0, timeout=60,
                **kw,
            )  # fmt: skip
        return openai.OpenAI(
            base_url="http://localhost/v1",
            api_key="unused-on-the-unix-socket",
            http_client=httpx2.Client(transport=httpx2.HTTPTransport(uds=self.socket), timeout=60),
            max_retries=0,
            **kw,
        )

    def close(self) -> None:
        try:
            self.call(self.daemon.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
            logging.getLogger("asyncio").removeHandler(self.blocked)
        assert not self.blocked.seen, f"the event loop was blocked: {self.blocked.seen}"


class _SlowCallbacks(logging.Handler):
    """asyncio's debug-mode reports of callbacks that held the loop (one line each)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing "):
            self.seen.append(message[:300])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    """Dotted config keys over the base config (override the fixture for other settings)."""
    return {}


@pytest.fixture
def double(tmp_path: Path) -> Iterator[MemoryRuntime]:
    runtime = MemoryRuntime(tmp_path / "double")
    yield runtime
    runtime.end_all()


@pytest.fixture
def daemon(
    tmp_path: Path, double: MemoryRuntime, config_overrides: dict[str, Any]
) -> Iterator[InProcessDaemon]:
    served = InProcessDaemon(tmp_path, double, config_overrides)
    yield served
    served.close()


@pytest.fixture
def client(daemon: InProcessDaemon) -> Iterator[openai.OpenAI]:
    sdk = daemon.sdk()
    yield sdk
    sdk.close()


@pytest.fixture
def raw(daemon: InProcessDaemon) -> Iterator[httpx2.Client]:
    """A plain HTTP client on the unix socket, for what the SDK cannot send."""
    with httpx2.Client(
        transport=httpx2.HTTPTransport(uds=daemon.socket), base_url="http://localhost", timeout=60
    ) as c:
        yield c


@pytest.fixture
def tcp(daemon: InProcessDaemon) -> Iterator[httpx2.Client]:
    """A plain HTTP client on the TCP listener, without a key (add the header per request)."""
    with httpx2.Client(base_url=daemon.tcp_url, timeout=60) as c:
        yield c


@pytest.fixture
def container(client: openai.OpenAI) -> str:
    return client.containers.create(name="fixture").id


@contextlib.contextmanager
def nothing_made(daemon: InProcessDaemon, raw: httpx2.Client) -> Iterator[None]:
    """The block leaves the listed containers and the double's sandboxes as they were."""
    before = (_listed(raw), sorted(daemon.runtime.sandboxes))
    yield
    assert (_listed(raw), sorted(daemon.runtime.sandboxes)) == before


def _listed(raw: httpx2.Client) -> list[str]:
    return [c["id"] for c in raw.get("/v1/containers?limit=100").json()["data"]]


class Clock:
    """`time` for a module under test (e.g. the reaper's), `ahead` seconds in the future."""

    def __init__(self, ahead: float) -> None:
        self.ahead = ahead

    def time(self) -> float:
        return time.time() + self.ahead


def wait_for(predicate: Any, what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
