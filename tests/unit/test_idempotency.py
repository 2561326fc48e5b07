"""Idempotency keys: one request runs per (owner, key), retries wait for it or replay it, keys
are bounded per owner and swept after their time to live."""

from __future__ import annotations

import asyncio
import time

import pytest

from daemon.config import IdempotencyConfig
from daemon.errors import RequestInFlight, http_error
from daemon.idempotency import Idempotency
from daemon.models import StoredResponse
from daemon.store import Store

OK = StoredResponse("fp", 200, b'{"id": "x"}')


async def test_a_retry_waits_for_the_first_and_gets_its_response(store: Store) -> None:
    keys = Idempotency(IdempotencyConfig(), store)
    assert await keys.begin("alice", "k") is None  # alice's first request runs
    retry = asyncio.ensure_future(keys.begin("alice", "k"))
    other = await keys.begin("bob", "k")  # bob's keys are his own
    assert other is None
    await asyncio.sleep(0.05)
    assert not retry.done()
    await keys.finish("alice", "k", OK)
    assert await retry == OK
    await keys.finish("bob", "k", None)  # failed: nothing stored, the key is free again
    assert await keys.begin("bob", "k") is None
    await keys.finish("bob", "k", None)


async def test_a_retry_gives_up_waiting_with_a_retryable_409(store: Store) -> None:
    keys = Idempotency(IdempotencyConfig(wait_s=0.1), store)
    assert await keys.begin("alice", "k") is None
    with pytest.raises(RequestInFlight) as info:
        await keys.begin("alice", "k")
    status, _body, headers = http_error(info.value)
    assert (status, headers) == (409, {"x-should-retry": "true", "Retry-After": "1"})
    await keys.finish("alice", "k", None)


async def test_keys_are_bounded_per_owner_and_swept(store: Store) -> None:
    now = int(time.time())
    for i in range(5):
        await store.idempotency.put("alice", f"k{i}", OK, now - 10 + i, keep=3)
    await store.idempotency.put("bob", "old", OK, now - 100, keep=3)
    assert [await store.idempotency.get("alice", f"k{i}", 0) is not None for i in range(5)] == [
        False, False, True, True, True,
    ]  # fmt: skip
    assert await store.idempotency.get("alice", "k4", now - 5) is None  # past its ttl
    assert await store.sweep(now - 50) == (1, 0)  # bob's old key goes
    assert await store.idempotency.get("bob", "old", 0) is None
    assert await store.idempotency.get("alice", "k4", 0) == OK
