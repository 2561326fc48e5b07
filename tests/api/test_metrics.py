"""/metrics after a scripted workload: parses, and every series moved as it should."""

from __future__ import annotations

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import DaemonHandle, exec_

pytestmark = pytest.mark.root


def _samples(raw: httpx2.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = raw.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return float(samples.get((name, tuple(sorted(labels.items()))), 0.0))


def test_metrics_follow_a_workload(raw: httpx2.Client, daemon: DaemonHandle) -> None:
    before = _samples(raw)
    cid = raw.post("/v1/containers", json={"name": "metrics", "memory_limit": "4g"}).json()["id"]
    exec_(raw, cid, "true", "exit 3", "sleep 5", timeout_ms=500)
    exec_(raw, cid, "python3 -c 'b = bytearray(5 * 1024**3)'")
    hold = "b = bytearray(100 * 1024**2); open('held', 'w').close(); import time; time.sleep(60)"
    exec_(raw, cid, f'python3 -c "{hold}" & while [ ! -e held ]; do sleep 0.05; done')
    after = _samples(raw)
    raw.delete(f"/v1/containers/{cid}")

    def moved(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert (
        moved("sandboxd_container_create_seconds_count", backend=daemon.backend, pool="miss") == 1
    )
    assert moved("sandboxd_exec_total", outcome="ok") >= 2  # `true` and the background start
    assert moved("sandboxd_exec_total", outcome="error") == 1
    assert moved("sandboxd_exec_total", outcome="timeout") == 1
    assert moved("sandboxd_exec_total", outcome="killed") == 1
    assert moved("sandboxd_kills_total", reason="oom") == 1
    assert moved("sandboxd_kills_total", reason="timeout") == 1
    assert moved("sandboxd_exec_seconds_count") >= 5
    assert _value(after, "sandboxd_containers", status="running", tier="4g") >= 1
    assert _value(after, "sandboxd_container_memory_bytes", tier="4g") >= 100 * 1024**2
    route = "/v1/containers/{container_id}/exec"
    assert moved("sandboxd_api_requests_total", route=route, status="200") == 3
    assert moved("sandboxd_api_request_seconds_count", route=route) == 3
    assert _value(
        after, "sandboxd_build_info", version="0.1.0", python=_py(after), backend=daemon.backend
    )
    # no container ids in any label
    assert not [k for k in after if any(v.startswith("cntr_") for _, v in k[1])]


def _py(samples: dict) -> str:  # type: ignore[type-arg]
    return next(dict(k[1])["python"] for k in samples if k[0] == "sandboxd_build_info")


def test_metrics_only_listener() -> None:
    """`metrics.listen` serves /metrics (and nothing else) on its own loopback port."""
    import socket

    from tests.e2e.harness import DaemonProcess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = DaemonProcess(metrics={"listen": f"127.0.0.1:{port}"})
    try:
        d.start()
        ok = httpx2.get(f"http://127.0.0.1:{port}/metrics")
        assert ok.status_code == 200 and "sandboxd_build_info" in ok.text
        assert httpx2.get(f"http://127.0.0.1:{port}/v1/containers").status_code == 404
        assert d.stop() == 0
    finally:
        d.cleanup()
