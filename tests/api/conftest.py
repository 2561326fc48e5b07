"""A real daemon (subprocess) on a short-path unix socket and on loopback TCP, shared by the
API tests; everything it creates lives under its temp dir and its own cgroup parent."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import openai
import pytest

from bench import dockerd
from bench.launcher import SandboxdProcess
from daemon.keys import hash_key
from sandbox.cgroups import CgroupLayout
from sandbox.host.dirs import instance_of
from sandbox.oci.runtime import forget_instance

pytestmark = pytest.mark.root


@dataclass(frozen=True)
class DaemonHandle:
    root: Path
    socket: str
    tcp_url: str
    pid: int
    log: Path
    cgroup_parent: str
    keys: dict[str, str]
    backend: str = "oci"
    engine_url: str = ""

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session", params=["oci", pytest.param("docker", marks=pytest.mark.docker)])
def daemon(request: pytest.FixtureRequest) -> Iterator[DaemonHandle]:
    """The session's daemon, once per backend (pytest groups the tests by backend)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    backend: str = request.param
    engine_url = request.getfixturevalue("docker_engine") if backend == "docker" else ""
    root = Path(tempfile.mkdtemp(prefix="sbxd-"))
    root.chmod(0o755)
    port = _free_port()
    keys = {"alice": "sk-alice-" + secrets.token_hex(8), "bob": "sk-bob-" + secrets.token_hex(8)}
    cgroup_parent = f"/sandboxd-apitest-{secrets.token_hex(4)}"
    sock = str(root / "api.sock")
    config = root / "config.toml"
    config.write_text(
        f"""
state_dir = "{root}/state"
[server]
socket = "{sock}"
socket_mode = 0o666
tcp = "127.0.0.1:{port}"
api_keys = {{ alice = "{hash_key(keys["alice"])}", bob = "{hash_key(keys["bob"])}" }}
[runtime]
backend = "{backend}"
runtime_root = "{root}/runc"
cgroup_parent = "{cgroup_parent}"
[docker]
engine_url = "{engine_url}"
cgroup_parent = "{cgroup_parent}-docker"
[containers]
workspace_bytes = {64 << 20}
max_upload_bytes = {8 << 20}
max_containers_per_owner = 150
memory_overcommit = 20.0
[files]
max_file_bytes = {4 << 20}
max_owner_bytes = {10 << 20}
min_expires_seconds = 1
sweep_interval_s = 0.5
[pool]
sizes = {{}}
"""
    )
    log = root / "daemon.log"
    process = SandboxdProcess(config, sock, log)
    try:
        process.start()
        yield DaemonHandle(
            root,
            sock,
            f"http://127.0.0.1:{port}",
            process.pid,
            log,
            cgroup_parent,
            keys,
            backend,
            engine_url,
        )
    finally:
        _teardown(process, sock, root, log, cgroup_parent)
        if engine_url:
            left = dockerd.containers(
                engine_url, f"sandboxd.instance={instance_of(root / 'state')}"
            )
            for c in left:
                dockerd.remove_container(engine_url, c["Id"])
            assert not left, f"docker containers left behind: {[c['Names'] for c in left]}"


def _teardown(
    process: SandboxdProcess, sock: str, root: Path, log: Path, cgroup_parent: str
) -> None:
    # Sandboxes outlive the daemon by design: delete what the tests left before stopping it.
    if process.running():
        with contextlib.suppress(Exception), _sdk(sock) as client:
            for c in client.containers.list(limit=100):
                client.containers.delete(c.id)
        code = process.stop()
        assert code == 0, f"daemon exit code {code}: {log.read_text()[-2000:]}"
    # What the daemon keeps between its sandboxes (the root's bind, cgroup parents, claims).
    parents = [cgroup_parent, f"{cgroup_parent}-docker"]
    forget_instance(root / "runc", parents, instance_of(root / "state"))
    leftovers = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                 if str(root) in line]  # fmt: skip
    layout = CgroupLayout.detect()
    for directory in [*layout.dirs(cgroup_parent), *layout.dirs(f"{cgroup_parent}-docker")]:
        with contextlib.suppress(FileNotFoundError, OSError):
            directory.rmdir()
    shutil.rmtree(root, ignore_errors=True)
    assert not leftovers, f"mounts left behind: {leftovers}"


def _sdk(sock: str, **kw: object) -> openai.OpenAI:
    transport = httpx2.HTTPTransport(uds=sock)
    return openai.OpenAI(
        base_url="http://localhost/v1",
        api_key="unused-on-the-unix-socket",
        http_client=httpx2.Client(transport=transport, timeout=120),
        max_retries=0,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def client(daemon: DaemonHandle) -> Iterator[openai.OpenAI]:
    sdk = _sdk(daemon.socket)
    yield sdk
    sdk.close()


@pytest.fixture
def raw(daemon: DaemonHandle) -> Iterator[httpx2.Client]:
    """A plain HTTP client on the unix socket, for what the SDK cannot send."""
    with httpx2.Client(
        transport=httpx2.HTTPTransport(uds=daemon.socket), base_url="http://localhost", timeout=120
    ) as c:
        yield c


@pytest.fixture
def container(client: openai.OpenAI) -> Iterator[str]:
    created = client.containers.create(name="fixture")
    yield created.id
    with contextlib.suppress(openai.NotFoundError):
        client.containers.delete(created.id)


def exec_(raw: httpx2.Client, cid: str, *commands: str, **extra: object) -> dict[str, object]:
    r = raw.post(f"/v1/containers/{cid}/exec", json={"commands": list(commands), **extra})
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body, dict)
    return body
