"""List cursors survive deletion: ids carry their creation time, so `after=<deleted id>`
continues where that id stood; ids of a database made before (random hex) keep their place
through the migration and, once deleted, through a tombstone."""

from __future__ import annotations

import secrets
import sqlite3
import time
from pathlib import Path

import pytest

from daemon import ids
from daemon.errors import InvalidRequest
from daemon.models import ContainerRecord, Status, UserFileRecord
from daemon.store import Store, migrations


def _container(cid: str, created: int = 100) -> ContainerRecord:
    return ContainerRecord(cid, "owner", "n", created, created, Status.RUNNING, "1g", 20, "oci")


async def _ids(store: Store, after: str | None, limit: int = 100, desc: bool = True) -> list[str]:
    page = await store.containers.page("owner", None, after, limit, desc)
    return [r.id for r in page.items]


def test_ids_sort_like_their_creation_time() -> None:
    made = []
    for _ in range(200):
        made.append(ids.container_id())
    assert made == sorted(made)
    seconds = int(made[0][5:13], 16)
    assert abs(seconds - time.time()) < 5  # OpenAI's shape: creation seconds in hex first
    for make, pattern in (
        (ids.container_id, ids.CONTAINER_ID),
        (ids.container_file_id, ids.CONTAINER_FILE_ID),
        (ids.user_file_id, ids.USER_FILE_ID),
        (ids.skill_id, ids.SKILL_ID),
        (ids.skill_version_id, ids.SKILL_VERSION_ID),
    ):
        oid = make()
        assert pattern.fullmatch(oid), oid
        key = ids.sort_key(oid)
        assert key is not None and key.endswith(oid)
    assert ids.sort_key("file-" + "A" * 24) is None  # an old file id: no time in it


async def test_a_deleted_cursor_continues_where_it_stood(store: Store) -> None:
    made = [ids.container_id() for _ in range(10)]
    for cid in made:
        await store.containers.insert(_container(cid))
    newest_first = made[::-1]
    assert await _ids(store, None, limit=3) == newest_first[:3]
    for cid in newest_first[:3]:  # the SDK's list-and-delete loop
        await store.containers.delete(cid)
    assert await _ids(store, newest_first[2], limit=3) == newest_first[3:6]
    await store.containers.delete(made[0])
    assert await _ids(store, made[0], desc=False) == made[1:7]


async def test_a_never_made_id_is_placed_by_its_time(store: Store) -> None:
    made = [ids.container_id() for _ in range(4)]
    for cid in made:
        await store.containers.insert(_container(cid))
    between = "cntr_" + made[2][5:21] + "0" * 32  # made[2]'s time, sorts just before it
    assert await _ids(store, between) == [made[1], made[0]]
    assert await _ids(store, between, desc=False) == [made[2], made[3]]
    future = "cntr_" + "f" * 48
    assert await _ids(store, future) == made[::-1]
    assert await _ids(store, future, desc=False) == []


async def test_an_old_file_id_that_is_gone_has_no_place(store: Store) -> None:
    with pytest.raises(InvalidRequest) as info:
        await store.files.page("owner", None, 0, "file-" + "A" * 24, 10, True)
    assert info.value.param == "after"


def _v4_database(path: Path) -> tuple[list[str], list[str]]:
    """A schema-4 database (before time-ordered ids) holding old random ids."""
    db = sqlite3.connect(path)
    for v in range(1, 5):
        db.executescript(f"BEGIN;{migrations.MIGRATIONS[v]};PRAGMA user_version={v};COMMIT;")
    cids = ["cntr_" + secrets.token_hex(24) for _ in range(6)]
    for i, cid in enumerate(cids):
        db.execute(
            "INSERT INTO containers (id, owner, name, created_at, last_active_at, status, "
            "memory_limit, expires_minutes, runtime) VALUES (?,?,?,?,?,?,?,?,?)",
            (cid, "owner", "n", 1000 + i // 2, 1000, "running", "1g", 20, "oci"),
        )
    fids = [
        "file-" + secrets.token_urlsafe(18).replace("-", "a").replace("_", "b") for _ in range(4)
    ]
    for fid in fids:
        db.execute(
            "INSERT INTO files (id, owner, filename, purpose, bytes, created_at) "
            "VALUES (?,?,?,?,?,?)",
            (fid, "owner", "f.txt", "batch", 1, 1000),
        )
    db.commit()
    db.close()
    return cids, fids


async def test_old_ids_keep_their_place_after_the_migration(tmp_path: Path) -> None:
    cids, fids = _v4_database(tmp_path / "state.db")
    store = Store(tmp_path / "state.db")
    await store.open()
    try:
        assert await _ids(store, None) == cids[::-1]  # the order they were made in
        new = ids.container_id()
        await store.containers.insert(_container(new, int(time.time())))
        assert await _ids(store, None) == [new, *cids[::-1]]
        # A deleted old id has no time in it: its place is kept (a tombstone).
        await store.containers.delete(cids[3])
        assert await _ids(store, cids[3]) == cids[2::-1]
        assert await _ids(store, cids[3], desc=False) == [*cids[4:], new]
        page = await store.files.page("owner", None, 0, None, 2, True)
        assert [r.id for r in page.items] == fids[:1:-1] and page.has_more
        await store.files.delete(fids[2])
        rest = await store.files.page("owner", None, 0, fids[2], 10, True)
        assert [r.id for r in rest.items] == fids[1::-1]
        await store.files.insert(
            UserFileRecord(ids.user_file_id(), "owner", "g.txt", "batch", 1, 2000, None)
        )
        # The places of deleted old ids are kept for a day (the idempotency sweeper's pass).
        assert await store.sweep(int(time.time()) - 60) == (0, 0)
        assert await store.sweep(int(time.time()) + 1) == (0, 2)
        with pytest.raises(InvalidRequest):
            await store.files.page("owner", None, 0, fids[2], 10, True)
    finally:
        await store.close()
