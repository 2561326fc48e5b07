"""Faults: the OCI runtime missing (at start and mid-run), the state disk full, the agent
killed. Each gives a clear error, and the daemon recovers once the fault is gone."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import DaemonProcess

pytestmark = pytest.mark.root


def _empty_traces(d: DaemonProcess) -> dict[str, set[str]]:
    return {k: set() for k in d.host_traces()}


@pytest.fixture
def fake_runc() -> Iterator[Path]:
    """A runc that can be taken away: a wrapper script in a temp dir."""
    real = shutil.which("runc")
    assert real is not None
    directory = Path(tempfile.mkdtemp(prefix="sbxd-fr-"))
    script = directory / "runc"
    script.write_text(f'#!/bin/sh\nexec {real} "$@"\n')
    script.chmod(0o755)
    yield script
    shutil.rmtree(directory, ignore_errors=True)


def test_missing_runtime_at_start_is_a_clear_startup_error(fake_runc: Path) -> None:
    d = DaemonProcess(runtime={"oci_binary": str(fake_runc)})
    try:
        fake_runc.unlink()
        with pytest.raises(AssertionError, match="daemon exited"):
            d.start(timeout_s=20)
        log = d.log.read_text()
        assert "Traceback" not in log
        assert f"cannot start: OCI runtime '{fake_runc}': not found or not executable" in log
        # Recovery: the runtime is back, the daemon starts and serves.
        fake_runc.write_text(f'#!/bin/sh\nexec {shutil.which("runc")} "$@"\n')
        fake_runc.chmod(0o755)
        d.start()
        with d.client() as c:
            r = c.post("/v1/containers", json={"name": "back"})
            assert r.status_code == 200, r.text
            c.delete(f"/v1/containers/{r.json()['id']}")
        assert d.stop() == 0
        assert d.host_traces() == _empty_traces(d)
    finally:
        d.cleanup()


def test_runtime_vanishing_mid_run(fake_runc: Path) -> None:
    """runc disappears while the daemon runs: creating fails with an error (not a hang),
    existing sandboxes keep executing (exec goes to the agent, not runc), and once runc is
    back everything works and nothing leaked."""
    d = DaemonProcess(runtime={"oci_binary": str(fake_runc)})
    try:
        d.start()
        with d.client() as c:
            old = c.post("/v1/containers", json={"name": "old"}).json()["id"]
            body = fake_runc.read_text()
            fake_runc.unlink()
            started = time.monotonic()
            r = c.post("/v1/containers", json={"name": "new"})
            assert time.monotonic() - started < 30
            assert (r.status_code, r.json()["error"]["code"]) == (500, "sandbox_failed"), r.text
            r = c.post(f"/v1/containers/{old}/exec", json={"commands": ["echo alive"]})
            assert r.json()["output"][0]["stdout"] == "alive\n"
            assert c.get("/healthz").status_code == 200
            fake_runc.write_text(body)
            fake_runc.chmod(0o755)
            r = c.post("/v1/containers", json={"name": "new"})
            assert r.status_code == 200, r.text
            for item in c.get("/v1/containers?limit=100").json()["data"]:
                assert c.delete(f"/v1/containers/{item['id']}").status_code == 200
        assert d.stop() == 0
        assert d.host_traces() == _empty_traces(d)
    finally:
        d.cleanup()


@pytest.fixture
def small_state() -> Iterator[DaemonProcess]:
    """A daemon whose state dir is an 8 MiB tmpfs, so the disk can be filled at will."""
    d = DaemonProcess(containers={"workspace_bytes": 32 << 20})
    state = d.root / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(state)], check=True)
    try:
        d.start()
        yield d
    finally:
        d.cleanup()
        subprocess.run(["umount", "-l", str(state)], check=False)


def _fill(d: DaemonProcess) -> Path:
    filler = d.root / "state" / "filler"
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=16"],
        capture_output=True,
        check=False,
    )
    return filler


def test_disk_full_then_recovery(small_state: DaemonProcess) -> None:
    """With the state disk full a create fails (and leaves nothing), the API stays up and
    existing sandboxes keep working; once space is back, creates work again."""
    d = small_state
    with d.client() as c:
        old = c.post("/v1/containers", json={"name": "old"}).json()["id"]
        filler = _fill(d)
        r = c.post("/v1/containers", json={"name": "full"})
        assert r.status_code == 507, r.text
        assert r.json()["error"]["code"] == "insufficient_storage"
        assert c.get("/healthz").status_code == 200
        r = c.post(f"/v1/containers/{old}/exec", json={"commands": ["echo alive"]})
        assert r.status_code == 200, r.text
        assert r.json()["output"][0]["stdout"] == "alive\n"
        filler.unlink()
        r = c.post("/v1/containers", json={"name": "after"})
        assert r.status_code == 200, r.text
        for item in c.get("/v1/containers?limit=100").json()["data"]:
            assert c.delete(f"/v1/containers/{item['id']}").status_code == 200
    assert d.stop() == 0
    assert d.host_traces() == _empty_traces(d)


def test_disk_full_create_is_a_typed_error(small_state: DaemonProcess) -> None:
    with small_state.client() as c:
        _fill(small_state)
        r = c.post("/v1/containers", json={"name": "full"})
    assert r.status_code in (503, 507), r.text
    assert "Internal error" not in r.text


def test_agent_killed_from_the_host() -> None:
    """The agent (the sandbox's PID 1; sandbox code cannot kill it, see test_attacks'
    kill_init) dies anyway: the container expires at once (exec gets a clear error), delete
    cleans up, the daemon serves."""
    d = DaemonProcess()
    try:
        d.start()
        with d.client() as c:
            cid = c.post("/v1/containers", json={"name": "victim"}).json()["id"]
            state = subprocess.run(
                ["runc", "--root", d.runc_root, "state", cid],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            os.kill(json.loads(state.stdout)["pid"], signal.SIGKILL)
            deadline = time.monotonic() + 5
            while c.get(f"/v1/containers/{cid}").json()["status"] != "expired":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            r = c.post(f"/v1/containers/{cid}/exec", json={"commands": ["echo hi"]})
            assert (r.status_code, r.json()["error"]) == (
                400,
                {
                    "message": "Container is expired.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "container_expired",
                },
            )
            assert c.delete(f"/v1/containers/{cid}").status_code == 200
            r = c.post("/v1/containers", json={"name": "next"})
            assert r.status_code == 200
            c.delete(f"/v1/containers/{r.json()['id']}")
        assert d.stop() == 0
        assert d.host_traces() == _empty_traces(d)
    finally:
        d.cleanup()


def _runc_ids(d: DaemonProcess) -> set[str]:
    out = subprocess.run(
        ["runc", "--root", d.runc_root, "list", "-q"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    return set(out.split())


def test_corrupt_database_at_start_is_refused_and_left_alone() -> None:
    """A corrupt state database stops the start with a clear error, touches nothing (the
    running sandbox keeps running) and, once the file is restored, nothing is lost."""
    d = DaemonProcess()
    try:
        d.start()
        with d.client() as c:
            cid = c.post("/v1/containers", json={"name": "kept"}).json()["id"]
        assert d.stop() == 0
        db = d.root / "state" / "sandboxd.db"
        good = db.read_bytes()
        db.write_bytes(b"this is not a database" * 512)
        with pytest.raises(AssertionError, match="state database unusable"):
            d.start()
        assert cid in _runc_ids(d)  # no reconcile ran: the sandbox was not touched
        db.write_bytes(good)
        with contextlib.closing(sqlite3.connect(db)) as newer:  # a later sandboxd's database
            (version,) = newer.execute("PRAGMA user_version").fetchone()
            newer.execute(f"PRAGMA user_version={version + 1}")
        with pytest.raises(AssertionError, match="newer than this sandboxd") as refused:
            d.start()
        assert "Traceback" not in str(refused.value)  # a clean startup error, no crash
        assert cid in _runc_ids(d)
        with contextlib.closing(sqlite3.connect(db)) as back:
            back.execute(f"PRAGMA user_version={version}")
        d.start()
        with d.client() as c:
            r = c.post(f"/v1/containers/{cid}/exec", json={"commands": ["echo still here"]})
            assert r.status_code == 200, r.text
            assert r.json()["output"][0]["stdout"] == "still here\n"
            assert c.delete(f"/v1/containers/{cid}").status_code == 200
        assert d.stop() == 0
    finally:
        d.cleanup()


def test_locked_database_at_start_fails_clearly_then_recovers() -> None:
    """Another process holding the database's write lock: the start fails within the busy
    timeout with a clear error; once the lock is gone the next start serves everything."""
    d = DaemonProcess()
    try:
        d.start()
        with d.client() as c:
            cid = c.post("/v1/containers", json={"name": "kept"}).json()["id"]
        assert d.stop() == 0
        holder = sqlite3.connect(d.root / "state" / "sandboxd.db", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            started = time.monotonic()
            with pytest.raises(AssertionError, match="locked"):
                d.start(timeout_s=60)
            assert time.monotonic() - started < 30
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        d.start()
        with d.client() as c:
            assert c.get(f"/v1/containers/{cid}").json()["status"] == "running"
            assert c.delete(f"/v1/containers/{cid}").status_code == 200
        assert d.stop() == 0
    finally:
        d.cleanup()
