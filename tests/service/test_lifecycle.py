"""Lifecycle outside requests, in-process: the idle reaper, the agent watch, reconciliation at
start (restart, reboot, gone and orphan sandboxes), creates that fail, per-owner caps."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from daemon import lifecycle
from tests.apifixtures import assert_error
from tests.service.conftest import BLOCKING_S, Clock, InProcessDaemon, nothing_made, wait_for
from tests.service.runtime_double import MemoryRuntime


def _status(client: openai.OpenAI, cid: str) -> str:
    return client.containers.retrieve(cid).status


def _events(raw: httpx2.Client, cid: str) -> list[str]:
    r = raw.get(f"/v1/containers/{cid}/events")
    assert r.status_code == 200, r.text
    return [e["type"] for e in r.json()["data"]]


def test_an_idle_container_expires_and_its_sandbox_goes(
    daemon: InProcessDaemon, client: openai.OpenAI, raw: httpx2.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    idle = client.containers.create(name="idle").id
    kept = client.containers.create(
        name="kept", expires_after={"anchor": "last_active_at", "minutes": 60}
    ).id
    monkeypatch.setattr(lifecycle, "time", Clock(21 * 60))
    wait_for(lambda: _status(client, idle) == "expired", "the idle container to expire")
    assert idle not in daemon.runtime.sandboxes
    assert _status(client, kept) == "running" and kept in daemon.runtime.sandboxes
    assert "expired" in _events(raw, idle)
    reason = raw.get(f"/v1/containers/{idle}").json()["status_reason"]
    assert reason == "idle for 20 minutes"


def test_an_expired_container_refuses_work_and_can_be_deleted(
    daemon: InProcessDaemon, client: openai.OpenAI, raw: httpx2.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cid = client.containers.create(name="old").id
    monkeypatch.setattr(lifecycle, "time", Clock(21 * 60))
    wait_for(lambda: _status(client, cid) == "expired", "expiry")
    for r in (
        raw.post(f"/v1/containers/{cid}/exec", json={"commands": ["true"]}),
        raw.post(f"/v1/containers/{cid}/code", json={"code": "1"}),
        raw.post(f"/v1/containers/{cid}/files", files={"file": ("a.txt", b"a")}),
    ):
        assert_error(r, 400, code="container_expired")
    client.containers.delete(cid)
    with pytest.raises(openai.NotFoundError):
        client.containers.retrieve(cid)


def test_a_dead_agent_expires_its_container_at_once(
    daemon: InProcessDaemon, client: openai.OpenAI, raw: httpx2.Client
) -> None:
    cid = client.containers.create(name="doomed").id
    other = client.containers.create(name="fine").id
    daemon.runtime.kill_agent(cid)
    wait_for(lambda: _status(client, cid) == "expired", "the agent's death to expire it")
    body = raw.get(f"/v1/containers/{cid}").json()
    assert body["status_reason"] == "the sandbox's agent died"
    assert "agent_died" in _events(raw, cid)
    assert cid not in daemon.runtime.sandboxes
    assert _status(client, other) == "running"


def test_a_restart_reattaches_running_containers(
    daemon: InProcessDaemon, client: openai.OpenAI, raw: httpx2.Client
) -> None:
    cid = client.containers.create(name="survivor").id
    daemon.restart()
    assert _status(client, cid) == "running"
    assert cid in daemon.runtime.sandboxes
    assert "restarted_daemon" in _events(raw, cid)
    daemon.runtime.kill_agent(cid)  # watched again after the restart
    wait_for(lambda: _status(client, cid) == "expired", "the re-attached watch")


def test_a_sandbox_gone_while_stopped_expires_its_container(
    daemon: InProcessDaemon, client: openai.OpenAI, raw: httpx2.Client
) -> None:
    cid = client.containers.create(name="gone").id
    keep = client.containers.create(name="kept").id
    daemon.call(daemon.daemon.stop())
    daemon.call(daemon.runtime.destroy(cid))
    daemon.daemon = daemon._start("boot-1")
    assert raw.get(f"/v1/containers/{cid}").json()["status_reason"] == lifecycle.REASON_GONE
    assert _status(client, keep) == "running"


def test_after_a_reboot_every_container_expires(
    daemon: InProcessDaemon, client: openai.OpenAI, raw: httpx2.Client
) -> None:
    made = [client.containers.create(name=f"r{i}").id for i in range(3)]
    daemon.restart(boot_id="boot-2")
    for cid in made:
        body = raw.get(f"/v1/containers/{cid}").json()
        assert (body["status"], body["status_reason"]) == ("expired", lifecycle.REASON_REBOOT)
    assert daemon.runtime.sandboxes == {}
    fresh = client.containers.create(name="after").id
    daemon.restart(boot_id="boot-2")  # the same boot: nothing more expires
    assert _status(client, fresh) == "running"


def test_an_orphan_sandbox_is_destroyed_at_start(
    tmp_path: Path, daemon: InProcessDaemon, client: openai.OpenAI
) -> None:
    """A sandbox with no record (its daemon's state was lost) is destroyed by the next start."""
    orphan = client.containers.create(name="orphan").id
    other_root = tmp_path / "other"
    other_root.mkdir()
    fresh = InProcessDaemon(other_root, daemon.runtime)
    try:
        assert orphan not in fresh.runtime.sandboxes
    finally:
        fresh.close()


def test_a_create_the_backend_fails_leaves_nothing(
    daemon: InProcessDaemon, client: openai.OpenAI, raw: httpx2.Client
) -> None:
    daemon.runtime.fail_creates = 1
    with nothing_made(daemon, raw):
        r = raw.post("/v1/containers", json={"name": "broken"})
        err = assert_error(r, 500)
        assert err["type"] == "server_error"
    assert client.containers.create(name="works").status == "running"


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"containers.max_containers_per_owner": 3}


def test_the_per_owner_cap_is_per_owner(daemon: InProcessDaemon, raw: httpx2.Client) -> None:
    with daemon.sdk("alice") as alice, daemon.sdk("bob") as bob:
        made = [alice.containers.create(name=f"a{i}").id for i in range(3)]
        with httpx2.Client(base_url=daemon.tcp_url) as tcp:
            headers = {"Authorization": f"Bearer {daemon.keys['alice']}"}
            with nothing_made(daemon, raw):
                r = tcp.post("/v1/containers", json={"name": "a4"}, headers=headers)
                assert_error(r, 429, code="quota_exceeded")
            assert bob.containers.create(name="b1").status == "running"
            alice.containers.delete(made[0])
            r = tcp.post("/v1/containers", json={"name": "a4"}, headers=headers)
            assert r.status_code == 200, r.text


def test_a_tier_bigger_than_the_host_is_refused(
    daemon: InProcessDaemon, raw: httpx2.Client
) -> None:
    if daemon.daemon.admission.host_bytes >= 64 << 30:
        pytest.skip("the host has 64 GiB or more: every tier fits")
    with nothing_made(daemon, raw):
        r = raw.post("/v1/containers", json={"name": "huge", "memory_limit": "64g"})
        assert_error(r, 400, "memory_limit", code="invalid_request")


def test_runtime_double_is_the_daemons_backend(
    daemon: InProcessDaemon, double: MemoryRuntime
) -> None:
    assert daemon.daemon.runtime.name == "memory" and double.started == 1


def test_a_blocking_call_on_the_daemons_loop_is_caught(daemon: InProcessDaemon) -> None:
    """The layer's guard works: asyncio's debug mode reports a callback that held the loop,
    and the fixture fails any test that saw one (cleared here, after checking)."""

    async def blocks() -> None:
        time.sleep(BLOCKING_S * 1.5)  # noqa: ASYNC251 -- the blocking call the guard must catch

    daemon.call(blocks())
    assert daemon.blocked.seen and "took" in daemon.blocked.seen[0]
    daemon.blocked.seen.clear()
