"""Runtime contract: create, destroy, failure and cancellation leave the host clean."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path

import pytest

from sandbox.errors import AgentUnavailable, RuntimeFailure
from sandbox.host import workspace
from tests.runtime.conftest import (
    Harness,
    RunResources,
    check,
    new_id,
    open_backend,
    sh,
    spec,
)

pytestmark = pytest.mark.root


async def test_create_answers_then_destroy_leaves_nothing(backend: Harness) -> None:
    rt = backend.runtime
    s = spec()
    sid = s.sandbox_id
    await rt.create(s)

    await rt.agent(sid).ping()
    assert await rt.is_running(sid) is True
    assert sid in await rt.list_ids()
    counters = await rt.counters(sid)
    assert counters is not None
    assert counters.pids_current >= 1
    assert backend.leftovers(sid) != []  # the probe does see a live sandbox

    await rt.destroy(sid)

    assert await rt.is_running(sid) is False
    assert sid not in await rt.list_ids()
    assert await rt.counters(sid) is None
    assert backend.leftovers(sid) == []
    with pytest.raises(AgentUnavailable):
        await rt.agent(sid).ping()


async def test_destroy_kills_every_process(backend: Harness, sid: str) -> None:
    rt = backend.runtime
    # Processes that outlive their exec (detached, in their own session) die with the sandbox.
    await check(rt, sid, "setsid sleep 1000 >/dev/null 2>&1 & sleep 1000 >/dev/null 2>&1 &")
    counters = await rt.counters(sid)
    assert counters is not None
    assert counters.pids_current >= 3

    await rt.destroy(sid)

    assert backend.leftovers(sid) == []
    assert await rt.counters(sid) is None


async def test_destroy_ends_a_running_exec(backend: Harness, sid: str) -> None:
    """An exec open while its sandbox is destroyed ends at once with AgentUnavailable."""
    rt = backend.runtime
    task = asyncio.ensure_future(sh(rt, sid, "echo started; sleep 30"))
    await asyncio.sleep(0.5)
    started = time.monotonic()
    await rt.destroy(sid)
    with pytest.raises(AgentUnavailable):
        await asyncio.wait_for(task, 10)
    assert time.monotonic() - started < 5
    assert backend.leftovers(sid) == []


async def test_destroy_is_idempotent(backend: Harness, sid: str) -> None:
    rt = backend.runtime
    await rt.destroy(sid)
    await rt.destroy(sid)
    assert backend.leftovers(sid) == []
    assert sid not in await rt.list_ids()

    never = new_id()
    await rt.destroy(never)
    assert await rt.is_running(never) is False
    assert await rt.counters(never) is None
    assert backend.leftovers(never) == []


async def test_sandboxes_are_independent(backend: Harness) -> None:
    """Destroying one sandbox leaves its neighbour running and listed."""
    rt = backend.runtime
    a, b = spec(), spec()
    await asyncio.gather(rt.create(a), rt.create(b))
    assert {a.sandbox_id, b.sandbox_id} <= set(await rt.list_ids())

    await rt.destroy(a.sandbox_id)

    assert await rt.list_ids() == [b.sandbox_id]
    assert await rt.is_running(b.sandbox_id) is True
    assert await check(rt, b.sandbox_id, "echo alive") == "alive\n"
    assert backend.leftovers(a.sandbox_id) == []


@pytest.mark.parametrize("failure", ["refuse", "after_start"])
async def test_failed_create_leaves_nothing(
    backend_name: str, run_resources: RunResources, failure: str
) -> None:
    """`refuse`: the container runtime fails every call; `after_start`: it starts the
    sandbox, then reports a failure. Either way create raises and nothing remains."""
    async with open_backend(backend_name, run_resources, failure) as broken:
        s = spec()
        with pytest.raises(RuntimeFailure):
            await broken.runtime.create(s)
        assert broken.leftovers(s.sandbox_id) == []


async def test_cancelled_create_leaves_nothing(backend: Harness) -> None:
    """All or nothing, also when the caller gives up (client hang-up, shutdown) at any point
    of a create, although a cancelled await does not stop the runtime's worker threads."""
    rt = backend.runtime
    leaked: dict[float, list[str]] = {}
    for delay_s in (0.0, 0.01, 0.02, 0.03, 0.04, 0.06, 0.08):
        s = spec()
        task = asyncio.ensure_future(rt.create(s))
        await asyncio.sleep(delay_s)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.2)  # a worker thread that outlived the cancel would act now
        if task.cancelled():
            if left := backend.leftovers(s.sandbox_id):
                leaked[delay_s] = left
        else:  # create won the race: a complete sandbox
            assert await rt.is_running(s.sandbox_id) is True
        await rt.destroy(s.sandbox_id)
        assert backend.leftovers(s.sandbox_id) == []
        assert s.sandbox_id not in await rt.list_ids()
    assert leaked == {}


async def test_slow_destroys_do_not_hold_up_creates(
    backend: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight destroys stuck in their host-side step (a workspace that takes long to unmount)
    leave creates their threads: destroys have a pool of their own."""
    rt = backend.runtime
    ids = []
    for _ in range(8):
        s = spec()
        await rt.create(s)
        ids.append(s.sandbox_id)
    release = threading.Event()
    stuck = threading.Semaphore(0)
    real_destroy = workspace.destroy

    def slow_destroy(mountpoint: Path) -> None:
        stuck.release()
        release.wait(60)
        real_destroy(mountpoint)

    monkeypatch.setattr(workspace, "destroy", slow_destroy)
    destroys = [asyncio.ensure_future(rt.destroy(sid)) for sid in ids]
    created: asyncio.Future[None] | None = None
    try:
        for _ in range(4):
            assert await asyncio.to_thread(stuck.acquire, True, 20), "no destroy got that far"
        deadline = time.monotonic() + 3  # time for more of them to get stuck, if they can
        while time.monotonic() < deadline:
            await asyncio.to_thread(stuck.acquire, True, max(0.0, deadline - time.monotonic()))
        s = spec()
        created = asyncio.ensure_future(rt.create(s))
        await asyncio.wait({created}, timeout=20)
        assert created.done(), "the create waited for the destroys' threads"
        created.result()
        assert not any(d.done() for d in destroys)
        assert (await check(rt, s.sandbox_id, "echo fine")) == "fine\n"
    finally:
        release.set()
        await asyncio.gather(*destroys, *([created] if created else []))
    assert all(backend.leftovers(sid) == [] for sid in ids)
