"""Containers through the official SDK (in-process): pagination, order and name filter,
request ids and health, bearer keys on TCP."""

from __future__ import annotations

import httpx2
import openai
import pytest

from tests.service.conftest import InProcessDaemon as DaemonHandle


def test_pagination_order_and_name_filter(client: openai.OpenAI) -> None:
    name = "page-test"
    ids = [client.containers.create(name=name).id for _ in range(5)]
    try:
        first = client.containers.list(name=name, limit=2, order="asc")
        assert [c.id for c in first.data] == ids[:2]
        assert first.has_more is True
        every = [c.id for c in client.containers.list(name=name, limit=2, order="asc")]
        assert every == ids  # the SDK follows `after` until has_more is false
        newest_first = [c.id for c in client.containers.list(name=name, limit=100)]
        assert newest_first == ids[::-1]
        assert [c.id for c in client.containers.list(name="no-such-name")] == []
    finally:
        for cid in ids:
            client.containers.delete(cid)


def test_request_ids_and_health(raw: httpx2.Client) -> None:
    ok = raw.get("/healthz")
    assert ok.status_code == 200 and ok.json() == {"status": "ok"}
    assert ok.headers["x-request-id"].startswith("req_")
    missing = raw.get("/v1/containers/cntr_" + "0" * 48)
    assert missing.status_code == 404
    assert missing.headers["x-request-id"].startswith("req_")
    assert missing.headers["x-should-retry"] == "false"
    doc = raw.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")


def test_tcp_requires_a_bearer_key(daemon: DaemonHandle) -> None:
    anon = httpx2.get(daemon.tcp_url + "/v1/containers")
    assert anon.status_code == 401
    assert anon.json()["error"]["code"] == "invalid_api_key"
    wrong = httpx2.get(daemon.tcp_url + "/v1/containers", headers={"Authorization": "Bearer no"})
    assert wrong.status_code == 401
    url = daemon.tcp_url + "/v1"
    with (
        openai.OpenAI(base_url=url, api_key=daemon.keys["alice"], max_retries=0) as alice,
        openai.OpenAI(base_url=url, api_key=daemon.keys["bob"], max_retries=0) as bob,
    ):
        _alice_and_bob(alice, bob)


def _alice_and_bob(alice: openai.OpenAI, bob: openai.OpenAI) -> None:
    c = alice.containers.create(name="alice-box")
    try:
        assert c.id in [x.id for x in alice.containers.list()]
        assert c.id not in [x.id for x in bob.containers.list()]
        with pytest.raises(openai.NotFoundError):
            bob.containers.retrieve(c.id)
        with pytest.raises(openai.NotFoundError):
            bob.containers.delete(c.id)
        alice.containers.retrieve(c.id)
    finally:
        alice.containers.delete(c.id)
