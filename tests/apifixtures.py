"""What the API suites share, whichever daemon serves them (tests/api: a real one; tests/service:
in-process): cleanup fixtures over the layer's `client`, and error and naming helpers.
Registered as a pytest plugin by tests/conftest.py."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import openai
import pytest


@pytest.fixture
def skills(client: openai.OpenAI) -> Iterator[list[str]]:
    """Ids of skills a test makes; deleted at its end."""
    made: list[str] = []
    yield made
    for sid in made:
        with contextlib.suppress(openai.NotFoundError):
            client.skills.delete(sid)


@pytest.fixture
def uploaded(client: openai.OpenAI) -> Iterator[list[str]]:
    """Ids of /v1/files a test makes; deleted at its end."""
    made: list[str] = []
    yield made
    for fid in made:
        with contextlib.suppress(openai.NotFoundError):
            client.files.delete(fid)


def assert_error(
    r: httpx2.Response, status: int, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """An OpenAI-shaped error with the request id; `param`/`code` checked when given."""
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert err["message"] and isinstance(err["message"], str)
    if param is not None:
        assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    assert r.headers["x-request-id"].startswith("req_")
    return err  # type: ignore[no-any-return]


def idempotency_key() -> str:
    return "test-" + secrets.token_hex(8)


def named(client: openai.OpenAI, name: str) -> list[str]:
    """Ids of the caller's containers called `name`."""
    return [c.id for c in client.containers.list(limit=100) if c.name == name]


@pytest.fixture
def unique_name(client: openai.OpenAI) -> Iterator[str]:
    """A container name no other test uses; its containers are deleted at the end."""
    unique = "idem-" + secrets.token_hex(4)
    yield unique
    for cid in named(client, unique):
        with contextlib.suppress(openai.NotFoundError):
            client.containers.delete(cid)


def tcp_sdk(tcp_url: str, key: str) -> openai.OpenAI:
    """The official SDK on a daemon's TCP listener, with a bearer key."""
    return openai.OpenAI(base_url=tcp_url + "/v1", api_key=key, max_retries=0, timeout=120)


def create_containers(sdk: openai.OpenAI, n: int, name: str) -> list[str]:
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda _: sdk.containers.create(name=name).id, range(n)))
