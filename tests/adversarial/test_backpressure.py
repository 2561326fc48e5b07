"""Backpressure: more concurrent operations on one container than its agent serves are
queued (a bounded number), then refused with 429 `sandbox_busy`, `x-should-retry: true` and
`Retry-After` before anything ran; never a 500. Before, 200 concurrent execs on one sandbox
gave raw 500s: the exec's timeout also counted the wait for an agent connection."""

from __future__ import annotations

import asyncio
import collections

import httpx2
import pytest

from daemon.config import AgentConfig
from tests.api.conftest import DaemonHandle

pytestmark = pytest.mark.root

CONCURRENT = 200


async def test_200_concurrent_execs_on_one_container(daemon: DaemonHandle, container: str) -> None:
    limits = AgentConfig()  # the API suite's daemon keeps the defaults
    transport = httpx2.AsyncHTTPTransport(
        uds=daemon.socket, limits=httpx2.Limits(max_connections=CONCURRENT + 10)
    )
    # Each command sleeps 1 s with a 2 s timeout: 200 of them need ~9 s on 24 connections,
    # far past any one's deadline if waiting for a connection counted against it.
    body = {"commands": ["sleep 1; echo done"], "timeout_ms": 2000}
    async with httpx2.AsyncClient(transport=transport, base_url="http://x", timeout=120) as api:
        gate = asyncio.Event()

        async def one() -> httpx2.Response:
            await gate.wait()
            return await api.post(f"/v1/containers/{container}/exec", json=body)

        tasks = [asyncio.ensure_future(one()) for _ in range(CONCURRENT)]
        await asyncio.sleep(0)
        gate.set()
        replies = await asyncio.gather(*tasks)
        after = await api.post(f"/v1/containers/{container}/exec", json={"commands": ["echo ok"]})
    statuses = collections.Counter(r.status_code for r in replies)
    print(f"200 concurrent execs on one container: {dict(statuses)}")
    assert set(statuses) <= {200, 429}, statuses
    # All of the first connections + queue get through; at least the overflow is refused.
    assert statuses[200] >= limits.connections + limits.queue, statuses
    assert statuses[429] > 0, statuses
    for r in replies:
        if r.status_code == 200:
            item = r.json()["output"][0]
            assert (item["stdout"], item["outcome"]) == ("done\n", {"type": "exit", "exit_code": 0})
        else:
            assert r.json()["error"] == {
                "message": "The container is busy (exec): too many operations at once; "
                "retry shortly.",
                "type": "rate_limit_exceeded",
                "param": None,
                "code": "sandbox_busy",
            }
            assert r.headers["x-should-retry"] == "true"
            assert r.headers["retry-after"] == "1"
            assert r.headers["x-request-id"].startswith("req_")
    assert after.status_code == 200 and after.json()["output"][0]["stdout"] == "ok\n"


async def test_streamed_execs_beyond_the_queue_are_429_before_any_stream(
    daemon: DaemonHandle, container: str
) -> None:
    """A streamed exec holds its agent connection before the stream opens: the overflow gets
    a plain 429 a client can retry, never a 200 stream that ends in an error event."""
    limits = AgentConfig()
    many = limits.connections + limits.queue + 40
    transport = httpx2.AsyncHTTPTransport(
        uds=daemon.socket, limits=httpx2.Limits(max_connections=many + 10)
    )
    body = {"commands": ["sleep 1; echo done"], "timeout_ms": 5000, "stream": True}
    async with httpx2.AsyncClient(transport=transport, base_url="http://x", timeout=120) as api:
        gate = asyncio.Event()

        async def one() -> tuple[int, str, bytes]:
            await gate.wait()
            r = await api.post(f"/v1/containers/{container}/exec", json=body)
            return r.status_code, r.headers["content-type"], r.content

        tasks = [asyncio.ensure_future(one()) for _ in range(many)]
        await asyncio.sleep(0)
        gate.set()
        replies = await asyncio.gather(*tasks)
    statuses = collections.Counter(status for status, _, _ in replies)
    print(f"{many} concurrent streamed execs on one container: {dict(statuses)}")
    assert set(statuses) <= {200, 429}, statuses
    assert statuses[429] > 0, statuses
    for status, content_type, content in replies:
        if status == 429:
            assert content_type.startswith("application/json"), content[:200]
        else:
            assert content_type.startswith("text/event-stream")
            assert b'"type":"done"' in content and b'"type":"error"' not in content
