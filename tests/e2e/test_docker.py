"""The docker backend end to end: a daemon SIGKILLed after the engine created a container
but before the container's record says so leaves no orphan once it starts again."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from bench import dockerd
from sandbox.host.dirs import instance_of
from tests.e2e.harness import DaemonProcess

pytestmark = [pytest.mark.root, pytest.mark.e2e, pytest.mark.docker]


@pytest.fixture
def daemon(docker_engine: str) -> Iterator[DaemonProcess]:
    d = DaemonProcess(runtime={"backend": "docker"})
    d.write_config(
        docker={"engine_url": docker_engine, "cgroup_parent": f"{d.cgroup_parent}-docker"}
    )
    try:
        yield d
    finally:
        for c in _containers(d, docker_engine):
            dockerd.remove_container(docker_engine, c["Id"])
        d.cleanup()


def _containers(d: DaemonProcess, engine_url: str) -> list[dict[str, object]]:
    label = f"sandboxd.instance={instance_of(d.root / 'state')}"
    return dockerd.containers(engine_url, label)


def _traces(d: DaemonProcess, engine_url: str) -> dict[str, object]:
    sandboxes = d.root / "state" / "sandboxes"
    mounts = [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if str(sandboxes) in line.split()[4]
    ]
    return {
        "containers": [c["Id"] for c in _containers(d, engine_url)],
        "dirs": sorted(p.name for p in sandboxes.iterdir()) if sandboxes.exists() else [],
        "mounts": mounts,
    }


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_sigkill_between_engine_create_and_record(
    daemon: DaemonProcess, docker_engine: str
) -> None:
    daemon.start()
    failures: list[str] = []

    def create() -> None:
        with daemon.client(timeout_s=30) as c:
            try:
                c.post("/v1/containers", json={"name": "doomed"})
                failures.append("create returned before the daemon was killed")
            except httpx2.HTTPError:
                pass  # the daemon died under the request: expected

    worker = threading.Thread(target=create)
    worker.start()
    deadline = time.monotonic() + 30
    while not _containers(daemon, docker_engine):
        assert time.monotonic() < deadline, "the engine never saw the container"
        time.sleep(0.005)
    daemon.kill()  # the container exists; its record is still `creating`
    worker.join(timeout=30)
    assert failures == []
    assert set(daemon.rows().values()) <= {"creating"}
    assert _traces(daemon, docker_engine)["containers"], "no orphan to reconcile: test is void"

    daemon.start()
    assert _traces(daemon, docker_engine) == {"containers": [], "dirs": [], "mounts": []}
    assert daemon.rows() == {}
    with daemon.client() as c:  # and the daemon serves on the docker backend
        r = c.post("/v1/containers", json={"name": "after"})
        assert r.status_code == 200, r.text
        cid = r.json()["id"]
        r = c.post(f"/v1/containers/{cid}/exec", json={"commands": ["echo $((6*7))"]})
        assert r.json()["output"][0]["stdout"] == "42\n"
        assert c.delete(f"/v1/containers/{cid}").status_code == 200
    assert daemon.stop() == 0
    assert _traces(daemon, docker_engine) == {"containers": [], "dirs": [], "mounts": []}


@pytest.mark.slow
def test_dockerd_killed_under_the_daemon() -> None:
    """SIGKILL of the engine: sandboxd stays up and answers, a create during the outage fails
    cleanly (no record, nothing on the host); once the engine is back, creates work again and
    the older container is either alive or cleanly deletable."""
    engine = dockerd.PrivateDockerd()
    d = DaemonProcess(runtime={"backend": "docker"})
    d.write_config(docker={"engine_url": engine.url, "cgroup_parent": f"{d.cgroup_parent}-docker"})
    try:
        engine.start()
        d.start()
        with d.client() as c:
            old = c.post("/v1/containers", json={"name": "old"}).json()["id"]
            engine.kill()
            assert c.get("/healthz").status_code == 200
            r = c.post("/v1/containers", json={"name": "during"})
            assert r.status_code in (500, 503), r.text
            assert "Internal error" not in r.text
            names = [x["name"] for x in c.get("/v1/containers?limit=100").json()["data"]]
            assert "during" not in names
            engine.start()
            new = c.post("/v1/containers", json={"name": "after"})
            assert new.status_code == 200, new.text
            r = c.post(f"/v1/containers/{new.json()['id']}/exec", json={"commands": ["echo ok"]})
            assert r.json()["output"][0]["stdout"] == "ok\n"
            for cid in (old, new.json()["id"]):
                assert c.delete(f"/v1/containers/{cid}").status_code == 200
                assert c.get(f"/v1/containers/{cid}").status_code == 404
        assert d.stop() == 0
        assert _traces(d, engine.url) == {"containers": [], "dirs": [], "mounts": []}
    finally:
        if engine.proc is not None:
            for c in _containers(d, engine.url):
                dockerd.remove_container(engine.url, c["Id"])
        d.cleanup()
        engine.stop()
