"""After a host reboot no sandbox survives: every running record becomes expired, with why.

A reboot is simulated the way it looks to the daemon: a new boot id. The sandbox is left
running on purpose (it cannot be after a real reboot), to show the daemon does not trust it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from daemon.composition import Daemon
from daemon.config import load
from daemon.containers import Caller, CreateParams
from daemon.lifecycle import REASON_REBOOT
from tests.e2e.harness import DaemonProcess

pytestmark = [pytest.mark.root, pytest.mark.e2e]


async def test_reboot_expires_every_running_container() -> None:
    probe = DaemonProcess()  # only for its temp root, cgroup parent and host probes
    cfg = load(probe.root / "config.toml")
    caller = Caller(owner="uid:0", admin=True)
    try:
        async with Daemon(cfg, probe.socket, boot_id="boot-one") as d:
            rec = await d.containers.create(caller, CreateParams("r", "1g", 20))
        assert probe.rows() == {rec.id: "running"}
        async with Daemon(cfg, probe.socket, boot_id="boot-two") as d:
            after = await d.containers.get(caller, rec.id, touch=False)
            assert after.status == "expired"
            assert after.status_reason == REASON_REBOOT
            kinds = [e.type for e in await d.containers.events(caller, rec.id)]
            assert kinds == ["created", "expired"]
        assert all(not ids for ids in probe.host_traces().values()), probe.host_traces()
    finally:
        probe.cleanup()


async def test_idle_deadlines_are_honoured_across_a_daemon_gap() -> None:
    """A container whose deadline passed while the daemon was down expires at the next start
    (the gap is simulated by moving its last activity an hour back)."""
    probe = DaemonProcess(containers={"reaper_interval_s": 0.5})
    cfg = load(probe.root / "config.toml")
    caller = Caller(owner="uid:0", admin=True)
    try:
        async with Daemon(cfg, probe.socket, boot_id="same-boot") as d:
            stale = await d.containers.create(caller, CreateParams("stale", "1g", 20))
            fresh = await d.containers.create(caller, CreateParams("fresh", "1g", 20))
        db = sqlite3.connect(probe.root / "state" / "sandboxd.db")
        with db:
            db.execute(
                "UPDATE containers SET last_active_at = ? WHERE id = ?",
                (int(time.time()) - 3600, stale.id),
            )
        db.close()
        async with Daemon(cfg, probe.socket, boot_id="same-boot") as d:
            await asyncio.sleep(1.5)
            assert (await d.containers.get(caller, stale.id, touch=False)).status == "expired"
            assert (await d.containers.get(caller, fresh.id, touch=False)).status == "running"
            await d.containers.delete(caller, fresh.id)
    finally:
        probe.cleanup()
