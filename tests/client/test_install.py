"""`pip install clients/python` alone into a fresh venv (no daemon packages: no aiohttp, no
mitmproxy, no docker SDK) drives the real daemon, blocking and asyncio, socket and TCP, an
attachment included."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.api.conftest import DaemonHandle

pytestmark = [pytest.mark.root, pytest.mark.slow]

CLIENT_DIR = Path(__file__).resolve().parents[2] / "clients" / "python"

SCRIPT = textwrap.dedent(
    """
    import asyncio, importlib.util, sys
    from sandboxd_client import AsyncClient, Client, NotFound

    for absent in ("daemon", "sandbox", "proxy", "aiohttp", "mitmproxy", "docker"):
        assert importlib.util.find_spec(absent) is None, absent
    sock, url, key, tmp = sys.argv[1:5]
    with Client(socket=sock, env={}) as sbx:
        box = sbx.containers.create("from-venv")
        up = sbx.containers.files.upload(box.id, b"1,2\\n", filename="d.csv")
        out = sbx.exec(box.id, "cat d.csv").output[0]
        assert out.stdout == "1,2\\n" and out.exit_code == 0, out
        assert sbx.containers.files.download(box.id, up.id, tmp + "/d.csv") == 4
        cat = sbx.processes.start(box.id, "exec cat")
        with sbx.processes.attach(box.id, cat.id, timeout=30) as a:  # the attach WebSocket
            a.send(b"ping")
            a.eof()
            echoed = b"".join(i for i in a if isinstance(i, bytes))
            assert echoed == b"ping" and a.exit and a.exit.exit_code == 0, (echoed, a.exit)

    async def main() -> None:
        async with AsyncClient(url=url, api_key=key, env={}) as sbx:
            made = await sbx.files.create(b"x", filename="x.txt")
            assert made.id in [f.id async for f in sbx.files.list()]
            await sbx.files.delete(made.id)
            try:
                await sbx.containers.retrieve(box.id)  # alice does not own the socket's box
            except NotFound as exc:
                assert exc.request_id, exc
            else:
                raise AssertionError("another owner's container was visible")

    asyncio.run(main())
    with Client(socket=sock, env={}) as sbx:
        sbx.containers.delete(box.id)
    print("ok")
    """
)


def test_the_client_installs_alone_and_drives_the_daemon(
    daemon: DaemonHandle, tmp_path: Path
) -> None:
    source = tmp_path / "src"  # a copy: setuptools leaves build/ and egg-info where it builds
    shutil.copytree(CLIENT_DIR, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    # The host pip's configuration (its local index, wheel dir, cache) finds httpx2.
    installed = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    frozen = subprocess.run(
        [python, "-m", "pip", "freeze"], capture_output=True, text=True, check=True, timeout=120
    ).stdout.lower()
    assert "sandboxd-client" in frozen and "sandboxd==" not in frozen
    assert "aiohttp" not in frozen and "mitmproxy" not in frozen
    ran = subprocess.run(
        [python, "-c", SCRIPT, daemon.socket, daemon.tcp_url, daemon.keys["alice"], str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stdout.strip() == "ok"
    assert (tmp_path / "d.csv").read_bytes() == b"1,2\n"
