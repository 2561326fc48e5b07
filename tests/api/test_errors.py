"""Bad input gets a clear OpenAI-style error and changes nothing."""

from __future__ import annotations

from pathlib import Path

import httpx2
import openai
import pytest

from tests.api.conftest import DaemonHandle
from tests.hosttraces import sandbox_dirs

pytestmark = pytest.mark.root


def _state(daemon: DaemonHandle, raw: httpx2.Client) -> tuple[list[str], list[str]]:
    listed = [c["id"] for c in raw.get("/v1/containers?limit=100").json()["data"]]
    on_disk = sorted(sandbox_dirs(daemon.root / "state"))
    return listed, on_disk


def _assert_error(r: httpx2.Response, status: int, param: str | None = None) -> dict[str, object]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] and isinstance(err["message"], str)
    if param is not None:
        assert err["param"] == param
    assert r.headers["x-request-id"].startswith("req_")
    return err  # type: ignore[no-any-return]


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
    err = _assert_error(r, status, param)
    assert err["type"] == "invalid_request_error"
    assert r.headers["x-should-retry"] == "false"
    assert _state(daemon, raw) == before


def test_oversized_json_body(raw: httpx2.Client) -> None:
    big = b'{"name": "' + b"x" * (2 << 20) + b'"}'
    r = raw.post("/v1/containers", content=big, headers={"Content-Type": "application/json"})
    _assert_error(r, 413)


def test_unknown_ids(raw: httpx2.Client, container: str) -> None:
    for path in (
        "/v1/containers/cntr_" + "0" * 48,
        "/v1/containers/../../etc/passwd",
        "/v1/containers/not-an-id",
        f"/v1/containers/{container}/files/cfile_" + "0" * 32,
        f"/v1/containers/{container}/files/cfile_" + "0" * 32 + "/content",
        f"/v1/containers/{container}/files/garbage",
    ):
        _assert_error(raw.get(path), 404)


def test_bad_list_params(raw: httpx2.Client) -> None:
    _assert_error(raw.get("/v1/containers?limit=0"), 400, "limit")
    _assert_error(raw.get("/v1/containers?limit=abc"), 400, "limit")
    _assert_error(raw.get("/v1/containers?order=sideways"), 400, "order")


def test_bad_exec_bodies(raw: httpx2.Client, container: str) -> None:
    url = f"/v1/containers/{container}/exec"
    _assert_error(raw.post(url, json={"commands": []}), 400, "commands")
    _assert_error(raw.post(url, json={"commands": [1]}), 400, "commands")
    _assert_error(raw.post(url, json={"commands": ["true"], "timeout_ms": -1}), 400, "timeout_ms")
    _assert_error(raw.post(url, json={"commands": ["true"], "env": {"A-B": "x"}}), 400, "env")
    _assert_error(raw.post(url, json={"commands": ["true"], "what": 1}), 400, "what")
    _assert_error(raw.post(url, json={"commands": ["true"], "stream": "yes"}), 400, "stream")


@pytest.mark.parametrize("name", ["../../etc/x", "a/b", "..", ".", "x\\y", ""])
def test_path_traversal_in_upload_names(
    daemon: DaemonHandle, raw: httpx2.Client, container: str, name: str
) -> None:
    r = raw.post(f"/v1/containers/{container}/files", files={"file": (name, b"evil")})
    _assert_error(r, 400, "file")
    assert not Path("/etc/x").exists()
    listing = raw.get(f"/v1/containers/{container}/files").json()["data"]
    assert listing == []


def test_oversized_upload_leaves_nothing(
    client: openai.OpenAI, raw: httpx2.Client, container: str
) -> None:
    r = raw.post(f"/v1/containers/{container}/files", files={"file": ("big.bin", b"x" * (9 << 20))})
    _assert_error(r, 413)
    assert client.containers.files.list(container).data == []
    out = raw.post(f"/v1/containers/{container}/exec", json={"commands": ["ls -A | wc -l"]})
    assert out.json()["output"][0]["stdout"] == "0\n"


def test_upload_without_file_part(raw: httpx2.Client, container: str) -> None:
    r = raw.post(f"/v1/containers/{container}/files", files={"other": ("a.txt", b"x")})
    _assert_error(r, 400, "file")
    r = raw.post(f"/v1/containers/{container}/files", json={"file_id": "file-abc"})
    _assert_error(r, 404, "file_id")
