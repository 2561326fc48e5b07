"""The warm pool: claims are fast and fresh, it refills, it never hands a sandbox out twice,
and it leaves nothing behind at shutdown or after a crash."""

from __future__ import annotations

import time

import pytest

from tests.e2e.harness import DaemonProcess

pytestmark = [pytest.mark.root, pytest.mark.e2e]


def _depth(c) -> int:  # type: ignore[no-untyped-def]
    for line in c.get("/metrics").text.splitlines():
        if line.startswith('sandboxd_pool_depth{image="host",tier="1g"}'):
            return int(float(line.split()[-1]))
    raise AssertionError("no pool depth metric")


def _wait_full(c, size: int) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 30
    while _depth(c) < size:
        assert time.monotonic() < deadline, "pool did not fill"
        time.sleep(0.05)


def _sample(metrics: str, series: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def _ids(d: DaemonProcess) -> dict[str, set[str]]:
    return d.host_traces()


def test_pool_hits_are_fresh_and_refilled() -> None:
    d = DaemonProcess(pool={"sizes": {"1g": 2}})
    try:
        d.start()
        with d.client() as c:
            _wait_full(c, 2)
            pooled = _ids(d)["runc"]
            assert len(pooled) == 2 and d.rows() == {}
            r0 = c.post("/v1/containers", json={"name": "a"})
            assert r0.status_code == 200, r0.text
            first = r0.json()
            assert first["id"] in pooled  # claimed, not created
            r = c.post(f"/v1/containers/{first['id']}/exec", json={"commands": ["echo x > f; ls"]})
            assert r.json()["output"][0]["stdout"] == "f\n"
            events = c.get(f"/v1/containers/{first['id']}/events").json()["data"]
            assert events[0]["type"] == "created" and events[0]["detail"]["pool"] == "hit"
            c.delete(f"/v1/containers/{first['id']}")
            _wait_full(c, 2)
            seen = {first["id"]}
            for name in ("b", "c", "d"):
                box = c.post("/v1/containers", json={"name": name}).json()
                assert box["id"] not in seen  # never handed out twice
                seen.add(box["id"])
                out = c.post(f"/v1/containers/{box['id']}/exec", json={"commands": ["ls -A"]})
                assert out.json()["output"][0]["stdout"] == ""  # an empty workspace
            cold = c.post("/v1/containers", json={"name": "cold", "memory_limit": "4g"}).json()
            metrics = c.get("/metrics").text
            hits = _sample(
                metrics, 'sandboxd_pool_claims_total{image="host",result="hit",tier="1g"}'
            )
            misses = _sample(
                metrics, 'sandboxd_pool_claims_total{image="host",result="miss",tier="1g"}'
            )
            assert hits >= 3 and hits + misses == 4  # b, c, d back to back may outrun the refill
            assert _sample(metrics, 'sandboxd_container_create_seconds_count{backend="oci",'
                           'pool="hit"}') == hits  # fmt: skip
            for cid in [*seen - {first["id"]}, cold["id"]]:
                c.delete(f"/v1/containers/{cid}")
        assert d.stop() == 0  # drains the pool
        assert all(not ids for ids in _ids(d).values()), _ids(d)
    finally:
        d.cleanup()


def test_pooled_sandboxes_left_by_a_crash_are_reconciled() -> None:
    d = DaemonProcess(pool={"sizes": {"1g": 1}})
    try:
        d.start()
        with d.client() as c:
            _wait_full(c, 1)
        before = _ids(d)["runc"]
        d.kill()
        d.start()
        with d.client() as c:
            _wait_full(c, 1)
        after = _ids(d)["runc"]
        assert len(after) == 1 and not (after & before)  # the orphan went, a new one came
        assert d.stop() == 0
        assert all(not ids for ids in _ids(d).values())
    finally:
        d.cleanup()


def test_a_claimed_sandbox_is_then_given_its_files() -> None:
    d = DaemonProcess(pool={"sizes": {"1g": 1}})
    try:
        d.start()
        with d.client() as c:
            _wait_full(c, 1)
            up = c.post(
                "/v1/files", files={"file": ("notes.txt", b"from the pool\n")},
                data={"purpose": "user_data"},
            ).json()  # fmt: skip
            r = c.post("/v1/containers", json={"name": "p", "file_ids": [up["id"]]})
            assert r.status_code == 200, r.text
            box = r.json()
            events = c.get(f"/v1/containers/{box['id']}/events").json()["data"]
            assert events[0]["detail"]["pool"] == "hit"
            out = c.post(f"/v1/containers/{box['id']}/exec", json={"commands": ["cat notes.txt"]})
            assert out.json()["output"][0]["stdout"] == "from the pool\n"
            c.delete(f"/v1/containers/{box['id']}")
        assert d.stop() == 0
    finally:
        d.cleanup()
