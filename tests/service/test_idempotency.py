"""Safe retries: a creating POST with an Idempotency-Key runs once per caller and key; retries
(after a client timeout, or while the first is still running) get the first response, and the
same key with another request is 409."""

from __future__ import annotations

import threading

import httpx2
import openai

from tests.apifixtures import idempotency_key, named
from tests.service.conftest import InProcessDaemon as DaemonHandle


def test_concurrent_retries_wait_for_the_first(
    client: openai.OpenAI, raw: httpx2.Client, unique_name: str
) -> None:
    key = idempotency_key()
    results: list[httpx2.Response] = []

    def post() -> None:
        r = raw.post("/v1/containers", json={"name": unique_name}, headers={"Idempotency-Key": key})
        results.append(r)

    threads = [threading.Thread(target=post) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [200] * 6, [r.text for r in results]
    assert len({r.json()["id"] for r in results}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in results) == 5
    assert named(client, unique_name) == [results[0].json()["id"]]


def test_the_same_key_with_another_request_is_409(
    client: openai.OpenAI, raw: httpx2.Client, unique_name: str
) -> None:
    key = idempotency_key()
    h = {"Idempotency-Key": key}
    first = raw.post("/v1/containers", json={"name": unique_name}, headers=h)
    assert first.status_code == 200
    for other in (
        raw.post("/v1/containers", json={"name": unique_name + "-other"}, headers=h),
        raw.post("/v1/files", data={"purpose": "batch"}, files={"file": ("a", b"a")}, headers=h),
    ):
        assert other.status_code == 409, other.text
        assert other.json()["error"]["code"] == "idempotency_key_reused"
        assert other.headers["x-should-retry"] == "false"
    assert named(client, unique_name) == [first.json()["id"]]
    assert not named(client, unique_name + "-other")


def test_keys_are_per_caller_and_failures_do_not_spend_them(
    daemon: DaemonHandle, client: openai.OpenAI, raw: httpx2.Client, unique_name: str
) -> None:
    key = idempotency_key()
    h = {"Idempotency-Key": key}
    bad = raw.post("/v1/containers", json={"name": unique_name, "memory_limit": "3g"}, headers=h)
    assert bad.status_code == 400
    good = raw.post(
        "/v1/containers", json={"name": unique_name}, headers=h
    )  # a failure made nothing
    assert good.status_code == 200, good.text
    with openai.OpenAI(base_url=daemon.tcp_url + "/v1", api_key=daemon.keys["bob"]) as bob:
        theirs = bob.containers.create(
            name=unique_name, extra_headers=h
        )  # bob's key space is his own
        try:
            assert theirs.id != good.json()["id"]
        finally:
            bob.containers.delete(theirs.id)
    r = raw.post(
        "/v1/containers", json={"name": unique_name}, headers={"Idempotency-Key": "x" * 256}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "Idempotency-Key"
