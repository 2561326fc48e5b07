"""List cursors survive deletion, on a real daemon: the Node SDK's list-and-delete loop over
containers, and the Python SDK's over container files (the agent lists them). The rest of
the cursor cases run in-process (tests/service/test_cursors.py)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import openai
import pytest

from tests.api.conftest import DaemonHandle
from tests.apifixtures import create_containers, tcp_sdk

pytestmark = [pytest.mark.root, pytest.mark.slow]

MANY = 130  # > 6 pages of the SDKs' default 20
NODE_OPENAI = "openai@6"  # the major version the failure was found with (6.49)


@pytest.fixture(scope="module")
def node_openai() -> Path:
    """The official Node SDK, installed once into a test-owned cache dir (npm registry)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node and npm are needed for the Node SDK test, and CI has them")
        pytest.skip("node/npm not installed: the Node SDK's list-and-delete loop is not tried")
    root = Path(tempfile.gettempdir()) / "sandboxd-test-node-openai"
    root.mkdir(mode=0o700, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # engineers share this machine
        if not (root / "node_modules" / "openai" / "package.json").is_file():
            subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--no-save", "--prefix", str(root),
                 NODE_OPENAI],
                check=True, capture_output=True, timeout=300,  # the host's npm settings
            )  # fmt: skip
    return root


NODE_LOOP = """
const OpenAI = require("openai");
const client = new OpenAI({ baseURL: process.env.URL, apiKey: process.env.KEY, maxRetries: 0 });
(async () => {
  const deleted = [];
  for await (const c of client.containers.list()) {
    await client.containers.delete(c.id);
    deleted.push(c.id);
  }
  console.log(JSON.stringify(deleted));
})().catch((e) => { console.error(e); process.exit(1); });
"""


def test_list_and_delete_empties_container_files(client: openai.OpenAI, container: str) -> None:
    made = {client.containers.files.create(container, file=(f"f{i}.txt", b"x")).id
            for i in range(45)}  # fmt: skip
    deleted = []
    for f in client.containers.files.list(container):
        client.containers.files.delete(f.id, container_id=container)
        deleted.append(f.id)
    assert set(deleted) == made, f"deleted {len(deleted)} of {len(made)}"
    assert client.containers.files.list(container).data == []


def test_node_sdk_list_and_delete_empties_130_containers(
    daemon: DaemonHandle, node_openai: Path
) -> None:
    with tcp_sdk(daemon.tcp_url, daemon.keys["alice"]) as alice:
        made = set(create_containers(alice, MANY, "doomed-node"))
        try:
            script = node_openai / "loop.js"
            script.write_text(NODE_LOOP)
            out = subprocess.run(
                ["node", str(script)],
                cwd=node_openai,
                capture_output=True,
                text=True,
                timeout=600,
                env={
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "URL": daemon.tcp_url + "/v1",
                    "KEY": daemon.keys["alice"],
                },
                check=False,
            )
            assert out.returncode == 0, out.stderr[-2000:]
            deleted = json.loads(out.stdout)
            assert set(deleted) == made, f"deleted {len(deleted)} of {len(made)}"
            assert alice.containers.list().data == []
        finally:
            for c in alice.containers.list(limit=100):
                alice.containers.delete(c.id)
