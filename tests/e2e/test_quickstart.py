"""The README's first command, run for real: it builds the image it runs containers on
(here `minimal`, found up to date in the tests' image cache: `python-data`, its default, is
tests/e2e/test_images.py's), brings up a daemon the SDK can drive, and SIGTERM stops it
cleanly while sandboxes keep running for the next start to re-attach."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import openai
import pytest

from sandbox.cgroups import CgroupLayout
from sandbox.host.dirs import instance_of
from sandbox.oci.runtime import forget_instance
from tests.imagecache import built, link_into

pytestmark = [pytest.mark.root, pytest.mark.e2e]
REPO = Path(__file__).resolve().parents[2]


def _start(root: Path) -> subprocess.Popen[bytes]:
    sock = root / "api.sock"
    with open(root / "daemon.log", "ab") as log:
        proc = subprocess.Popen(
            [str(REPO / "scripts" / "sandboxd-up"), "--config", str(root / "config.toml")],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": "/root",
                "SANDBOXD_IMAGE": "minimal",
            },
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, (root / "daemon.log").read_text()[-2000:]
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
            return proc
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("daemon did not come up")


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


@pytest.fixture
def root() -> Iterator[Path]:
    built("minimal")
    path = Path(tempfile.mkdtemp(prefix="sbxd-e2e-"))
    path.chmod(0o755)  # sandboxes run as unprivileged uids: the state dir must be searchable
    link_into(path / "state", "minimal")
    parent = f"/sandboxd-e2e-{os.getpid()}"
    (path / "config.toml").write_text(
        f'state_dir = "{path}/state"\n[server]\nsocket = "{path}/api.sock"\n'
        f'[runtime]\nruntime_root = "{path}/runc"\ncgroup_parent = "{parent}"\n'
        "[pool]\nsizes = {}\n"
    )
    yield path
    forget_instance(path / "runc", [parent], instance_of(path / "state"))
    for directory in CgroupLayout.detect().dirs(parent):
        with contextlib.suppress(FileNotFoundError):
            directory.rmdir()
    mounts = [m for m in Path("/proc/self/mountinfo").read_text().splitlines() if str(path) in m]
    shutil.rmtree(path, ignore_errors=True)
    assert not mounts


def _client(root: Path) -> openai.OpenAI:
    transport = httpx2.HTTPTransport(uds=str(root / "api.sock"))
    return openai.OpenAI(
        base_url="http://localhost/v1",
        api_key="x",
        max_retries=0,
        http_client=httpx2.Client(transport=transport, timeout=60),
    )


def test_quickstart_and_restart_keeps_sandboxes(root: Path) -> None:
    proc = _start(root)
    try:
        with _client(root) as client:
            box = client.containers.create(name="x")
            assert box.status == "running"
            assert client.get(f"/containers/{box.id}", cast_to=object)["image"] == "minimal"  # type: ignore[index]
            up = client.containers.files.create(box.id, file=("in.txt", b"round trip\n"))
            assert client.containers.files.content.retrieve(up.id, container_id=box.id).read() == (
                b"round trip\n"
            )
            out = client.post(
                f"/containers/{box.id}/exec",
                body={"commands": ["python3 -c 'print(6*7)'", "echo hi > made.txt"]},
                cast_to=object,
            )
            assert out["output"][0]["stdout"] == "42\n"  # type: ignore[index]
            assert out["output"][0]["outcome"] == {"type": "exit", "exit_code": 0}  # type: ignore[index]
            sources = {f.path: f.source for f in client.containers.files.list(box.id)}
            assert sources == {"/mnt/data/in.txt": "user", "/mnt/data/made.txt": "assistant"}
            client.post(
                f"/containers/{box.id}/exec",
                body={"commands": ["nohup sleep 1000 >/dev/null 2>&1 &"]},
                cast_to=object,
            )
        assert _stop(proc) == 0
        # Sandboxes outlive the daemon: a new daemon re-attaches, files and processes intact.
        proc = _start(root)
        with _client(root) as client:
            again = client.containers.retrieve(box.id)
            assert again.status == "running"
            out = client.post(
                f"/containers/{box.id}/exec",
                body={"commands": ["cat made.txt; pgrep -c sleep"]},
                cast_to=object,
            )
            assert out["output"][0]["stdout"] == "hi\n1\n"  # type: ignore[index]
            client.containers.delete(box.id)
            with pytest.raises(openai.NotFoundError):
                client.containers.retrieve(box.id)
    finally:
        if proc.poll() is None:
            assert _stop(proc) == 0
