"""`pip install 'clients/python[mcp]'` alone into a fresh venv (nothing of the daemon's) gives
a `sandboxd-mcp` that serves the real daemon to an MCP client."""

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
    import importlib.util, sys
    import anyio
    from mcp import ClientSession, StdioServerParameters, stdio_client

    for absent in ("daemon", "sandbox", "proxy", "aiohttp", "mitmproxy", "docker"):
        assert importlib.util.find_spec(absent) is None, absent
    server, sock, name = sys.argv[1:4]

    async def main() -> None:
        params = StdioServerParameters(
            command=server, args=["--container", name], env={"SANDBOXD_SOCKET": sock}
        )
        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            assert len((await s.list_tools()).tools) == 9
            ran = await s.call_tool("exec", {"commands": "echo $((6 * 7))"})
            assert not ran.is_error, ran.content
            out = ran.structured_content
            assert out["results"][0]["stdout"] == "42\\n", out
            gone = await s.call_tool("delete_sandbox", {"container": out["container"]})
            assert not gone.is_error, gone.content

    anyio.run(main)
    print("ok")
    """
)


def test_the_client_with_its_mcp_extra_installs_alone_and_serves(
    daemon: DaemonHandle, tmp_path: Path
) -> None:
    source = tmp_path / "src"  # a copy: setuptools leaves build/ and egg-info where it builds
    shutil.copytree(CLIENT_DIR, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    # The host pip's configuration (its local index, wheel dir, cache) finds the SDK.
    installed = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{source}[mcp]"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    server = str(venv / "bin" / "sandboxd-mcp")
    ran = subprocess.run(
        [python, "-c", SCRIPT, server, daemon.socket, "mcp-installed"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stdout.strip() == "ok"
