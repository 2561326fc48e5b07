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
    # Each command sleeps 1 s with a 2 s timeout: 200 of them need ~13 s on 16 connections,
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
