"""A state dir made by the daemon as it was before instance scoping and per-sandbox uid
ranges: its running sandboxes are adopted by today's daemon, not destroyed, keep working, and
are deleted cleanly; its pooled ones are removed."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import pytest

from tests.e2e.harness import DaemonProcess

pytestmark = [pytest.mark.root, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
# The last revision before instance-scoped names and uid ranges (sandboxes at <runtime_root>/
# <id>, cgroups <parent>/<id>, dirs <state>/sandboxes/<id>, every sandbox on uid 100000).
BEFORE = "f1c7c13"


def _old_tree() -> Path:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the repository's history (a git clone)")
    found = subprocess.run(
        ["git", "-C", str(REPO), "archive", BEFORE, "daemon", "sandbox", "proxy", "config"],
        capture_output=True, check=False, timeout=60,
    )  # fmt: skip
    if found.returncode != 0:
        pytest.skip(f"revision {BEFORE} is not in this clone: {found.stderr[-200:]!r}")
    tree = Path(tempfile.mkdtemp(prefix="sbxd-old-"))
    with tarfile.open(fileobj=BytesIO(found.stdout)) as tar:
        tar.extractall(tree, filter="data")
    return tree


def test_sandboxes_of_the_previous_layout_are_adopted() -> None:
    old = _old_tree()
    d = DaemonProcess(pool={"sizes": {"1g": 1}})
    try:
        env = {"PYTHONPATH": str(old)}
        argv = [sys.executable, "-m", "daemon", "serve", "--config", str(d.root / "config.toml")]
        d.start(prefix=("env", "-C", str(old)), argv=argv, env=env)
        with d.client() as c:
            box = c.post("/v1/containers", json={"name": "old"}).json()["id"]
            r = c.post(f"/v1/containers/{box}/exec", json={"commands": ["echo kept > f"]})
            assert r.status_code == 200, r.text
        legacy_dir = d.root / "state" / "sandboxes" / box
        assert (legacy_dir / "config.json").exists()
        assert (d.runtime_root / box / "state.json").exists()  # runc state, not scoped
        pooled = {p.name for p in (d.root / "state" / "sandboxes").iterdir()} - {box}
        assert d.stop() == 0
        proxy_dir, proxy_user = d.root / "state" / "proxy", pwd.getpwnam("sandboxd-proxy")
        assert proxy_dir.stat().st_uid == proxy_user.pw_uid  # the old layout: the proxy's own

        d.start()  # today's daemon, same state dir and config
        with d.client() as c:
            assert c.get(f"/v1/containers/{box}").json()["status"] == "running"
            st = proxy_dir.stat()  # taken back: root's, the proxy's group reads (proxy/ca.py)
            assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, proxy_user.pw_gid, 0o750)
            assert {p.stat().st_uid for p in proxy_dir.iterdir()} == {0}
            r = c.post(f"/v1/containers/{box}/exec", json={"commands": ["cat f"]})
            assert r.json()["output"][0]["stdout"] == "kept\n"
            events = [e["type"] for e in c.get(f"/v1/containers/{box}/events").json()["data"]]
            assert events[-1] == "restarted_daemon"
            for sid in pooled:  # an old pooled sandbox has no record: removed, as before
                assert not (d.root / "state" / "sandboxes" / sid).exists()
            new = c.post("/v1/containers", json={"name": "new"}).json()["id"]
            assert c.delete(f"/v1/containers/{box}").status_code == 200
            assert not legacy_dir.exists()
            assert not (d.runtime_root / box).exists()
            r = c.post(f"/v1/containers/{new}/exec", json={"commands": ["id -u"]})
            assert r.json()["output"][0]["stdout"] == "1000\n"
            assert c.delete(f"/v1/containers/{new}").status_code == 200
        assert d.stop() == 0
        assert os.listdir(d.root / "state" / "sandboxes") == []  # the pool is drained too
    finally:
        d.cleanup()
        shutil.rmtree(old, ignore_errors=True)
