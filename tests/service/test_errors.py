"""Bad input gets a clear OpenAI-style error and changes nothing (in-process): create bodies,
oversized JSON, list queries."""

from __future__ import annotations

import httpx2
import pytest

from tests.apifixtures import assert_error
from tests.hosttraces import sandbox_dirs
from tests.service.conftest import InProcessDaemon as DaemonHandle


def _state(daemon: DaemonHandle, raw: httpx2.Client) -> tuple[list[str], list[str]]:
    listed = [c["id"] for c in raw.get("/v1/containers?limit=100").json()["data"]]
    on_disk = sorted(sandbox_dirs(daemon.root / "state"))
    return listed, on_disk


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (b"", 400, None),
        (b'{"name": 5}', 400, "name"),
        (b"{}", 400, "name"),
        (b'{"name": "x", "memory_limit": "2g"}', 400, "memory_limit"),
        (b'{"name": "x", "expires_after": {"anchor": "last_active_at", "minutes": 0}}', 400,
         "expires_after.minutes"),
        (b'{"name": "x", "expires_after": {"anchor": "created_at", "minutes": 5}}', 400,
         "expires_after.anchor"),
        (b'{"name": "x", "expires_after": {"anchor": "last_active_at", "minutes": 99999}}', 400,
         "expires_after.minutes"),
        (b'{"name": "x", "bogus": 1}', 400, "bogus"),
        (b'{"name": "x", "network_policy": {"type": "open"}}', 400, "network_policy.type"),
        (b'{"name": "x", "network_policy": {"type": "allowlist", "allowed_domains": ["*.com"]}}',
         400, "network_policy.allowed_domains[0]"),
        (b'{"name": "x", "network_policy": {"type": "allowlist", "allowed_domains": '
         b'["a.example.com", "10.0.0.1"]}}', 400, "network_policy.allowed_domains[1]"),
        (b'{"name": "x", "network_policy": {"type": "allowlist", "allowed_domains": []}}',
         400, "network_policy.allowed_domains"),
        (b'{"name": "x", "network_policy": {"type": "allowlist", "allowed_domains": '
         b'["a.example.com"], "domain_secrets": '
         b'[{"name": "K", "domain": "a.example.com", "value": "v\\r\\nX: y"}]}}',
         400, "network_policy.domain_secrets[0].value"),
        (b'{"name": "x", "network_policy": {"type": "allowlist", "allowed_domains": '
         b'["a.example.com"], "domain_secrets": '
         b'[{"name": "K", "domain": "b.example.com", "value": "v"}]}}',
         400, "network_policy.domain_secrets[0].domain"),
        (b'{"name": "x", "network_policy": {"type": "allowlist", "allowed_domains": '
         b'["a.example.com"], "domain_secrets": '
         b'[{"name": "HTTPS_PROXY", "domain": "a.example.com", "value": "v"}]}}',
         400, "network_policy.domain_secrets[0].name"),
        (b'{"name": "x", "file_ids": ["file-abc"]}', 404, "file_id"),
        (b'{"name": "x", "skills": [{"type": "skill_reference", "skill_id": "s"}]}', 404,
         "skill_id"),
        (b'{"name": "x", "file_ids": "file-abc"}', 400, "file_ids"),
    ],
)  # fmt: skip
def test_bad_create_bodies_create_nothing(
    daemon: DaemonHandle, raw: httpx2.Client, body: bytes, status: int, param: str | None
) -> None:
    before = _state(daemon, raw)
    r = raw.post("/v1/containers", content=body, headers={"Content-Type": "application/json"})
    err = assert_error(r, status, param)
    assert err["type"] == "invalid_request_error"
    assert r.headers["x-should-retry"] == "false"
    assert _state(daemon, raw) == before


def test_oversized_json_body(raw: httpx2.Client) -> None:
    big = b'{"name": "' + b"x" * (2 << 20) + b'"}'
    r = raw.post("/v1/containers", content=big, headers={"Content-Type": "application/json"})
    assert_error(r, 413)


def test_bad_list_params(raw: httpx2.Client) -> None:
    assert_error(raw.get("/v1/containers?limit=0"), 400, "limit")
    assert_error(raw.get("/v1/containers?limit=abc"), 400, "limit")
    assert_error(raw.get("/v1/containers?order=sideways"), 400, "order")
