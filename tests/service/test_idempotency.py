"""Safe retries: a creating POST with an Idempotency-Key runs once per caller and key; retries
(after a client timeout, or while the first is still running) get the first response, and the
same key with another request is 409."""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Iterator

import httpx2
import openai
import pytest

from tests.service.conftest import InProcessDaemon as DaemonHandle


def _key() -> str:
    return "test-" + secrets.token_hex(8)


def _named(client: openai.OpenAI, name: str) -> list[str]:
    return [c.id for c in client.containers.list(limit=100) if c.name == name]


@pytest.fixture
def name(client: openai.OpenAI) -> Iterator[str]:
    unique = "idem-" + secrets.token_hex(4)
    yield unique
    for cid in _named(client, unique):
        with contextlib.suppress(openai.NotFoundError):
            client.containers.delete(cid)


def test_concurrent_retries_wait_for_the_first(
    client: openai.OpenAI, raw: httpx2.Client, name: str
) -> None:
    key = _key()
    results: list[httpx2.Response] = []

    def post() -> None:
        r = raw.post("/v1/containers", json={"name": name}, headers={"Idempotency-Key": key})
        results.append(r)

    threads = [threading.Thread(target=post) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [200] * 6, [r.text for r in results]
    assert len({r.json()["id"] for r in results}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in results) == 5
    assert _named(client, name) == [results[0].json()["id"]]


def test_the_same_key_with_another_request_is_409(
    client: openai.OpenAI, raw: httpx2.Client, name: str
) -> None:
    key = _key()
    h = {"Idempotency-Key": key}
    first = raw.post("/v1/containers", json={"name": name}, headers=h)
    assert first.status_code == 200
    for other in (
        raw.post("/v1/containers", json={"name": name + "-other"}, headers=h),
        raw.post("/v1/files", data={"purpose": "batch"}, files={"file": ("a", b"a")}, headers=h),
    ):
        assert other.status_code == 409, other.text
        assert other.json()["error"]["code"] == "idempotency_key_reused"
        assert other.headers["x-should-retry"] == "false"
    assert _named(client, name) == [first.json()["id"]]
    assert not _named(client, name + "-other")


def test_keys_are_per_caller_and_failures_do_not_spend_them(
    daemon: DaemonHandle, client: openai.OpenAI, raw: httpx2.Client, name: str
) -> None:
    key = _key()
    h = {"Idempotency-Key": key}
    bad = raw.post("/v1/containers", json={"name": name, "memory_limit": "3g"}, headers=h)
    assert bad.status_code == 400
    good = raw.post("/v1/containers", json={"name": name}, headers=h)  # a failure made nothing
    assert good.status_code == 200, good.text
    with openai.OpenAI(base_url=daemon.tcp_url + "/v1", api_key=daemon.keys["bob"]) as bob:
        theirs = bob.containers.create(name=name, extra_headers=h)  # bob's key space is his own
        try:
            assert theirs.id != good.json()["id"]
        finally:
            bob.containers.delete(theirs.id)
    r = raw.post("/v1/containers", json={"name": name}, headers={"Idempotency-Key": "x" * 256})
    assert r.status_code == 400 and r.json()["error"]["param"] == "Idempotency-Key"
