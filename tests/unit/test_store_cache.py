"""The store's in-memory container records: reads skip the database thread, yet no write of
a row (even one that fails to commit) can leave a stale record behind."""

from __future__ import annotations

import sqlite3

import pytest

from daemon.models import ContainerRecord, Status
from daemon.store import Store, containers


def _rec(cid: str, status: Status = Status.RUNNING) -> ContainerRecord:
    return ContainerRecord(cid, "owner", "name", 100, 100, status, "1g", 20, "oci")


async def test_every_write_is_seen_by_the_next_read(store: Store) -> None:
    await store.containers.insert(_rec("c1", Status.CREATING))
    assert (await store.containers.get("c1")).status is Status.CREATING  # type: ignore[union-attr]
    await store.containers.set_status("c1", Status.RUNNING)
    assert (await store.containers.get("c1")).status is Status.RUNNING  # type: ignore[union-attr]
    await store.containers.touch("c1", 500)
    assert (await store.containers.get("c1")).last_active_at == 500  # type: ignore[union-attr]
    await store.containers.set_status("c1", Status.EXPIRED, "idle")
    rec = await store.containers.get("c1")
    assert rec is not None and (rec.status, rec.status_reason) == (Status.EXPIRED, "idle")
    await store.containers.delete("c1")
    assert await store.containers.get("c1") is None


async def test_a_cached_read_does_not_touch_the_database(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.containers.insert(_rec("c1"))
    first = await store.containers.get("c1")

    async def no_db(fn: object) -> object:
        raise AssertionError("went to the database")

    monkeypatch.setattr(store.containers._db, "run", no_db)
    assert await store.containers.get("c1") is first


async def test_a_write_that_fails_still_drops_the_record(store: Store) -> None:
    await store.containers.insert(_rec("c1"))
    await store.containers.get("c1")
    with pytest.raises(sqlite3.Error):
        await store.containers._write("c1", "UPDATE no_such_table SET x = 1", ())
    assert "c1" not in store.containers._records


async def test_the_cache_is_bounded(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(containers, "MAX_CACHED_RECORDS", 3)
    for i in range(5):
        await store.containers.insert(_rec(f"c{i}"))
        await store.containers.get(f"c{i}")
        assert len(store.containers._records) <= 3
