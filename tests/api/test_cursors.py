"""List cursors survive deletion: the official SDKs' list-and-delete loops empty every list
(each page's cursor is the id of an object the loop has just deleted), for containers,
container files, files, skills and skill versions; malformed cursors are 400."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import openai
import pytest

from tests.api.conftest import DaemonHandle
from tests.api.test_skills import make_zip, skill_md

pytestmark = [pytest.mark.root, pytest.mark.slow]

MANY = 130  # > 6 pages of the SDKs' default 20
NODE_OPENAI = "openai@6"  # the major version the failure was found with (6.49)


def _tcp(daemon: DaemonHandle, who: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=daemon.tcp_url + "/v1", api_key=daemon.keys[who], max_retries=0, timeout=120
    )


def _create_containers(sdk: openai.OpenAI, n: int, name: str) -> list[str]:
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda _: sdk.containers.create(name=name).id, range(n)))


def test_python_sdk_list_and_delete_empties_130_containers(daemon: DaemonHandle) -> None:
    with _tcp(daemon, "bob") as bob:
        made = set(_create_containers(bob, MANY, "doomed"))
        try:
            deleted = []
            for c in bob.containers.list():  # the SDK follows `after` = the last id it saw
                bob.containers.delete(c.id)
                deleted.append(c.id)
            assert set(deleted) == made, f"deleted {len(deleted)} of {len(made)}"
            assert bob.containers.list().data == []
        finally:
            for c in bob.containers.list(limit=100):
                bob.containers.delete(c.id)


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


def test_node_sdk_list_and_delete_empties_130_containers(
    daemon: DaemonHandle, node_openai: Path
) -> None:
    with _tcp(daemon, "alice") as alice:
        made = set(_create_containers(alice, MANY, "doomed-node"))
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


def test_list_and_delete_empties_container_files(client: openai.OpenAI, container: str) -> None:
    made = {client.containers.files.create(container, file=(f"f{i}.txt", b"x")).id
            for i in range(45)}  # fmt: skip
    deleted = []
    for f in client.containers.files.list(container):
        client.containers.files.delete(f.id, container_id=container)
        deleted.append(f.id)
    assert set(deleted) == made, f"deleted {len(deleted)} of {len(made)}"
    assert client.containers.files.list(container).data == []


def test_list_and_delete_empties_files(client: openai.OpenAI) -> None:
    made = {client.files.create(file=(f"u{i}.txt", b"u"), purpose="evals").id for i in range(45)}
    try:
        deleted = []
        for f in client.files.list(purpose="evals", limit=20):
            client.files.delete(f.id)
            deleted.append(f.id)
        assert set(deleted) == made, f"deleted {len(deleted)} of {len(made)}"
    finally:
        for f in client.files.list(purpose="evals"):
            client.files.delete(f.id)


def test_list_and_delete_empties_skills_and_versions(
    client: openai.OpenAI, skills: list[str]
) -> None:
    zipped = make_zip({"s/SKILL.md": skill_md("loop")})
    skills.extend(client.skills.create(files=("s.zip", zipped)).id for _ in range(45))
    versioned = skills[0]
    for _ in range(44):
        client.skills.versions.create(versioned, files=("s.zip", zipped))
    deleted = []
    for v in client.skills.versions.list(versioned):
        if v.version != "1":  # the default version cannot be deleted
            client.skills.versions.delete(v.version, skill_id=versioned)
            deleted.append(v.version)
    assert sorted(map(int, deleted)) == list(range(2, 46))
    deleted = []
    for s in client.skills.list():
        client.skills.delete(s.id)
        deleted.append(s.id)
    assert set(skills) <= set(deleted), f"deleted {len(set(skills) & set(deleted))} of 45"


def test_a_never_made_id_is_placed_by_its_time(client: openai.OpenAI) -> None:
    made = [client.containers.create(name="placed").id for _ in range(3)]
    try:
        between = "cntr_" + made[2][5:21] + "0" * 32  # made[2]'s time: just before it
        page = client.containers.list(after=between, order="asc", limit=100)
        assert [c.id for c in page.data] == [made[2]]
        page = client.containers.list(after=between, limit=100)
        assert [c.id for c in page.data if c.id in made] == [made[1], made[0]]
    finally:
        for cid in made:
            client.containers.delete(cid)


@pytest.mark.parametrize(
    ("path", "after"),
    [
        ("/v1/containers", "cntr_nothex"),
        ("/v1/containers", "file-abc"),
        ("/v1/files", "cntr_" + "0" * 48),
        ("/v1/files", "file-OLDSTYLEIDTHATNEVEREXISTED"),  # an old id's shape: no time in it
        ("/v1/skills", "skill_123"),
    ],
)
def test_malformed_cursors_are_400(raw: httpx2.Client, path: str, after: str) -> None:
    r = raw.get(path, params={"after": after})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "after"
