"""Request validation, in-process: every bad body, query or route answers with OpenAI's error
shape (the parameter named), before anything reaches a sandbox, and changes nothing."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from tests.apifixtures import assert_error
from tests.service.conftest import InProcessDaemon, nothing_made

LONG = "x" * ((64 << 10) + 1)

BAD_EXEC: list[tuple[Any, str]] = [
    ({}, "commands"),
    ({"commands": []}, "commands"),
    ({"commands": None}, "commands"),
    ({"commands": [1]}, "commands"),
    ({"commands": ["true", 2]}, "commands"),
    ({"commands": {"a": "b"}}, "commands"),
    ({"commands": ["true"] * 65}, "commands"),
    ({"commands": [LONG]}, "commands"),
    ({"commands": ["echo \u0000"]}, "commands"),
    ({"commands": ["true"], "timeout_ms": -1}, "timeout_ms"),
    ({"commands": ["true"], "timeout_ms": 0}, "timeout_ms"),
    ({"commands": ["true"], "timeout_ms": 3_600_001}, "timeout_ms"),
    ({"commands": ["true"], "timeout_ms": "100"}, "timeout_ms"),
    ({"commands": ["true"], "timeout_ms": True}, "timeout_ms"),
    ({"commands": ["true"], "timeout_ms": 1.5}, "timeout_ms"),
    ({"commands": ["true"], "max_output_length": -1}, "max_output_length"),
    ({"commands": ["true"], "max_output_length": (16 << 20) + 1}, "max_output_length"),
    ({"commands": ["true"], "env": {"A-B": "x"}}, "env"),
    ({"commands": ["true"], "env": {"1A": "x"}}, "env"),
    ({"commands": ["true"], "env": {"A": 1}}, "env"),
    ({"commands": ["true"], "env": ["A=1"]}, "env"),
    ({"commands": ["true"], "env": {f"V{i}": "x" for i in range(129)}}, "env"),
    ({"commands": ["true"], "working_directory": "relative/dir"}, "working_directory"),
    ({"commands": ["true"], "working_directory": 5}, "working_directory"),
    ({"commands": ["true"], "stdin": 5}, "stdin"),
    ({"commands": ["true"], "stream": "yes"}, "stream"),
    ({"commands": ["true"], "stream": 1}, "stream"),
    ({"commands": ["true"], "what": 1}, "what"),
]


@pytest.mark.parametrize(("body", "param"), BAD_EXEC)
def test_bad_exec_bodies(raw: httpx2.Client, container: str, body: Any, param: str) -> None:
    err = assert_error(raw.post(f"/v1/containers/{container}/exec", json=body), 400, param)
    assert err["type"] == "invalid_request_error"


BAD_CODE: list[tuple[Any, str]] = [
    ({}, "code"),
    ({"code": 5}, "code"),
    ({"code": None}, "code"),
    ({"code": "x" * ((1 << 20) + 1)}, "code"),
    ({"code": "é" * ((1 << 19) + 1)}, "code"),  # few characters, too many UTF-8 bytes
    ({"code": "1", "session_id": ""}, "session_id"),
    ({"code": "1", "session_id": "a b"}, "session_id"),
    ({"code": "1", "session_id": "../x"}, "session_id"),
    ({"code": "1", "session_id": "s" * 65}, "session_id"),
    ({"code": "1", "session_id": 7}, "session_id"),
    ({"code": "1", "timeout_ms": 0}, "timeout_ms"),
    ({"code": "1", "timeout_ms": "5"}, "timeout_ms"),
    ({"code": "1", "max_output_length": -5}, "max_output_length"),
    ({"code": "1", "stream": "no"}, "stream"),
    ({"code": "1", "language": "python"}, "language"),
]


@pytest.mark.parametrize(("body", "param"), BAD_CODE)
def test_bad_code_bodies(raw: httpx2.Client, container: str, body: Any, param: str) -> None:
    assert_error(raw.post(f"/v1/containers/{container}/code", json=body), 400, param)


BAD_CREATES: list[tuple[Any, str]] = [
    ({"name": "x" * 257}, "name"),
    ({"name": None}, "name"),
    ({"name": ["a"]}, "name"),
    ({"name": "x", "memory_limit": "512m"}, "memory_limit"),
    ({"name": "x", "memory_limit": 1}, "memory_limit"),
    ({"name": "x", "expires_after": 5}, "expires_after"),
    ({"name": "x", "expires_after": {"anchor": "last_active_at", "minutes": -1}},
     "expires_after.minutes"),
    ({"name": "x", "expires_after": {"anchor": "last_active_at", "minutes": "5"}},
     "expires_after.minutes"),
    ({"name": "x", "file_ids": [5]}, "file_ids"),
    ({"name": "x", "file_ids": ["file-a", "file-a"]}, "file_ids"),
    ({"name": "x", "skills": "s"}, "skills"),
    ({"name": "x", "skills": [5]}, "skills[0]"),
    ({"name": "x", "skills": [{"type": "other"}]}, "skills[0].type"),
    ({"name": "x", "skills": [{"type": "skill_reference"}]}, "skills[0].skill_id"),
    ({"name": "x", "skills": [{"type": "inline", "name": "n", "description": "d"}]},
     "skills[0].source"),
    ({"name": "x", "network_policy": "allowlist"}, "network_policy"),
    ({"name": "x", "network_policy": {"type": "allowlist", "allowed_domains": "a.example.com"}},
     "network_policy.allowed_domains"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "param"), BAD_CREATES)
def test_bad_creates_make_nothing(
    daemon: InProcessDaemon, raw: httpx2.Client, body: Any, param: str
) -> None:
    with nothing_made(daemon, raw):
        err = assert_error(raw.post("/v1/containers", json=body), 400, param)
    assert err["type"] == "invalid_request_error"
    assert daemon.runtime.created == []


LISTS = ["/v1/containers", "/v1/files", "/v1/skills"]


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("limit=-1", "limit"),
        ("limit=x", "limit"),
        ("limit=1.5", "limit"),
        ("limit=100000000", "limit"),
        ("order=up", "order"),
    ],
)
def test_bad_list_queries(raw: httpx2.Client, path: str, query: str, param: str) -> None:
    assert_error(raw.get(f"{path}?{query}"), 400, param)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/containers"),
        ("POST", "/v1/containers"),
        ("GET", "/v1/files"),
        ("GET", "/v1/skills"),
        ("GET", "/v1/containers/cntr_" + "0" * 48),
        ("DELETE", "/v1/containers/cntr_" + "0" * 48),
        ("POST", "/v1/containers/cntr_" + "0" * 48 + "/exec"),
    ],
)
@pytest.mark.parametrize("authorization", [None, "Bearer sk-wrong", "Basic YTpi", "Bearer"])
def test_tcp_without_a_valid_key_is_401(
    daemon: InProcessDaemon, raw: httpx2.Client, method: str, path: str,
    authorization: str | None,
) -> None:  # fmt: skip
    headers = {} if authorization is None else {"Authorization": authorization}
    with nothing_made(daemon, raw), httpx2.Client(base_url=daemon.tcp_url) as tcp:
        r = tcp.request(method, path, headers=headers, json={"name": "x"})
        assert_error(r, 401, code="invalid_api_key")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/nothing", 404),
        ("GET", "/v2/containers", 404),
        ("GET", "/", 404),
        ("PUT", "/v1/containers", 405),
        ("PATCH", "/v1/files", 405),
        ("POST", "/healthz", 405),
    ],
)
def test_unknown_routes_and_methods_answer_in_the_error_shape(
    raw: httpx2.Client, method: str, path: str, status: int
) -> None:
    assert_error(raw.request(method, path), status)


def test_foreign_containers_are_not_found(daemon: InProcessDaemon) -> None:
    with (
        daemon.sdk("alice") as alice,
        httpx2.Client(base_url=daemon.tcp_url) as tcp,
    ):
        cid = alice.containers.create(name="mine").id
        bob = {"Authorization": f"Bearer {daemon.keys['bob']}"}
        for method, path, body in [
            ("GET", f"/v1/containers/{cid}", None),
            ("DELETE", f"/v1/containers/{cid}", None),
            ("GET", f"/v1/containers/{cid}/events", None),
            ("GET", f"/v1/containers/{cid}/files", None),
            ("POST", f"/v1/containers/{cid}/exec", {"commands": ["id"]}),
            ("POST", f"/v1/containers/{cid}/code", {"code": "1"}),
            ("GET", f"/v1/containers/{cid}/code/sessions", None),
        ]:
            assert_error(tcp.request(method, path, json=body, headers=bob), 404)
        assert cid not in [c["id"] for c in tcp.get("/v1/containers", headers=bob).json()["data"]]
        admin = {"Authorization": f"Bearer {daemon.keys['root']}"}
        assert tcp.get(f"/v1/containers/{cid}", headers=admin).json()["id"] == cid
        assert alice.containers.retrieve(cid).status == "running"


def test_health_openapi_and_metrics(raw: httpx2.Client, container: str) -> None:
    assert raw.get("/healthz").status_code == 200
    doc = raw.get("/openapi.json").json()
    assert "/v1/containers/{container_id}/exec" in doc["paths"]
    text = raw.get("/metrics").text
    assert 'sandboxd_containers{status="running",tier="1g"} 1.0' in text
