"""Schemathesis against our OpenAPI document, over TCP with a real key: whatever it sends,
no 5xx and no hang, and a rejected create leaves the container list as it was."""

from __future__ import annotations

import json
from importlib.resources import files

import httpx2
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.api.conftest import DaemonHandle

pytestmark = [pytest.mark.root, pytest.mark.slow]

DOCUMENT = json.loads(files("daemon").joinpath("openapi.json").read_text())
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)


def _count(daemon: DaemonHandle) -> int:
    r = httpx2.get(
        daemon.tcp_url + "/v1/containers?limit=100",
        headers={"Authorization": f"Bearer {daemon.keys['bob']}"},
        timeout=30,
    )
    assert r.status_code == 200
    return len(r.json()["data"])


@SCHEMA.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_api_fuzz(case: schemathesis.Case, daemon: DaemonHandle) -> None:
    creates = case.method == "POST" and case.path == "/v1/containers"
    before = _count(daemon) if creates else 0
    response = case.call(
        base_url=daemon.tcp_url,
        headers={"Authorization": f"Bearer {daemon.keys['bob']}"},
        timeout=30,
    )
    assert response.status_code < 500, (case.method, case.path, response.text[:500])
    if creates and response.status_code >= 400:
        assert _count(daemon) == before
    if creates and response.status_code == 200:
        httpx2.delete(
            f"{daemon.tcp_url}/v1/containers/{response.json()['id']}",
            headers={"Authorization": f"Bearer {daemon.keys['bob']}"},
            timeout=60,
        )


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",
        "multipart/form-data; boundary=abc",
        "multipart/mixed",
    ],
)
def test_malformed_multipart_upload_is_a_400(
    raw: httpx2.Client, container: str, content_type: str
) -> None:
    r = raw.post(
        f"/v1/containers/{container}/files",
        content=b"garbage",
        headers={"Content-Type": content_type},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_request"
