"""The host boundary with whole daemons: admission control against host memory (the warm pool
included), and two daemons on one host that never touch each other's sandboxes."""

from __future__ import annotations

import re
import time

import pytest

from bench import dockerd
from daemon.admission import host_memory_bytes
from sandbox.spec import AGENT_RESERVE_BYTES
from tests.e2e.harness import DaemonProcess

pytestmark = [pytest.mark.root, pytest.mark.e2e]

GIB = 1 << 30
RESERVE = AGENT_RESERVE_BYTES


def _metric(c, series: str) -> float:  # type: ignore[no-untyped-def]
    for line in c.get("/metrics").text.splitlines():
        if line.startswith((series + " ", series + "{")):
            return float(line.split()[-1])
    raise AssertionError(f"no {series}")


def _wait(what: str, check, timeout_s: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_admission_refuses_what_does_not_fit_and_the_pool_waits_for_room() -> None:
    """With room for 2.5 GiB of tiers and a 1g pool: two containers fit (from the pool), the
    third create is refused with 429 and nothing is made, the pool does not refill past the
    room; a delete makes room for the pool and the next create."""
    overcommit = 2.5 * GIB / host_memory_bytes()
    d = DaemonProcess(pool={"sizes": {"1g": 1}}, containers={"memory_overcommit": overcommit})
    try:
        d.start()
        with d.client() as c:
            assert _metric(c, "sandboxd_memory_capacity_bytes") == pytest.approx(2.5 * GIB, 1e-3)
            depth = 'sandboxd_pool_depth{image="host",tier="1g"}'
            _wait("pool filled", lambda: _metric(c, depth) == 1)
            a = c.post("/v1/containers", json={"name": "a"}).json()["id"]
            _wait("pool refilled", lambda: _metric(c, depth) == 1)
            b = c.post("/v1/containers", json={"name": "b"}).json()["id"]
            time.sleep(1)  # the pool would refill now if it did not respect admission
            assert _metric(c, depth) == 0
            # Each: its tier and its agent's reserve (the sandbox's cgroup limit is the sum).
            assert _metric(c, "sandboxd_memory_committed_bytes") == 2 * (GIB + RESERVE)
            before = d.host_traces()
            r = c.post("/v1/containers", json={"name": "c"})
            assert r.status_code == 429, r.text
            assert r.headers["x-should-retry"] == "true"
            err = r.json()["error"]
            assert err["code"] == "insufficient_capacity"
            assert "1g" in err["message"] and "0.4 GiB free" in err["message"]
            assert d.host_traces() == before
            assert sorted(d.rows()) == sorted([a, b])
            assert c.delete(f"/v1/containers/{a}").status_code == 200
            _wait("pool refilled after a delete", lambda: _metric(c, depth) == 1)
            r = c.post("/v1/containers", json={"name": "c"})
            assert r.status_code == 200, r.text
            assert r.json()["id"] not in (a, b)
    finally:
        d.cleanup()


def test_pooled_sandboxes_give_way_to_a_create() -> None:
    """A pooled 4g sandbox holds the room a 1g create needs: the create gets it (the pooled
    one is given back), and the pool does not take it back while it does not fit."""
    overcommit = 4.5 * GIB / host_memory_bytes()
    d = DaemonProcess(pool={"sizes": {"4g": 1}}, containers={"memory_overcommit": overcommit})
    try:
        d.start()
        with d.client() as c:
            depth = 'sandboxd_pool_depth{image="host",tier="4g"}'
            _wait("pool filled", lambda: _metric(c, depth) == 1)
            r = c.post("/v1/containers", json={"name": "small", "memory_limit": "1g"})
            assert r.status_code == 200, r.text
            assert _metric(c, depth) == 0
            time.sleep(1)  # the pool would refill now if it did not respect admission
            assert _metric(c, depth) == 0
            assert _metric(c, "sandboxd_memory_committed_bytes") == GIB + RESERVE
            assert c.delete(f"/v1/containers/{r.json()['id']}").status_code == 200
            _wait("pool refilled after the delete", lambda: _metric(c, depth) == 1)
    finally:
        d.cleanup()


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("backend", ["oci", pytest.param("docker", marks=pytest.mark.docker)])
def test_two_daemons_on_default_runtime_settings_never_touch_each_other(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """Two daemons with their own state dirs and the default runtime root and cgroup parents
    (and, for docker, one engine), each with a running and a pooled sandbox, restarted and
    SIGKILLed in turn 10 times: every sandbox of each survives, and neither ever reconciles
    one of the other's."""
    sections: dict[str, dict[str, object]] = {"pool": {"sizes": {"1g": 1}}}
    if backend == "docker":
        engine = request.getfixturevalue("docker_engine")
        sections |= {"runtime": {"backend": "docker"}, "docker": {"engine_url": engine}}
    daemons = [DaemonProcess(runtime_defaults=True, **sections) for _ in range(2)]
    try:
        boxes: list[str] = []
        for d in daemons:
            d.start()
            with d.client() as c:
                box = c.post("/v1/containers", json={"name": "keep"}).json()["id"]
                r = c.post(f"/v1/containers/{box}/exec", json={"commands": [f"echo {box} > f"]})
                assert r.status_code == 200
                boxes.append(box)
        for round_ in range(10):
            d = daemons[round_ % 2]
            if round_ % 4 < 2:
                assert d.stop() == 0
            else:
                d.kill()
            d.start()
            for d2, box in zip(daemons, boxes, strict=True):
                with d2.client() as c:
                    r = c.post(f"/v1/containers/{box}/exec", json={"commands": ["cat f"]})
                    assert r.status_code == 200, (round_, r.text)
                    assert r.json()["output"][0]["stdout"] == f"{box}\n"
                    assert c.get(f"/v1/containers/{box}").json()["status"] == "running"
        for d, other in ((daemons[0], daemons[1]), (daemons[1], daemons[0])):
            theirs = set(other.host_traces()["claims"]) | {boxes[daemons.index(other)]}
            log = d.log.read_text()
            touched = set(re.findall(r"cntr_[0-9a-f]{48}", log)) & theirs
            assert not touched, f"{d.root} logged {other.root}'s sandboxes: {touched}"
            assert "destroyed orphan" not in log or not touched
    finally:
        for d in daemons:
            if backend == "docker":
                label = f"sandboxd.instance={d.instance}"
                for c in dockerd.containers(request.getfixturevalue("docker_engine"), label):
                    dockerd.remove_container(request.getfixturevalue("docker_engine"), c["Id"])
            d.cleanup()
