"""The container file index in the store: a listing reconciles the paths it covered, the
records per container are capped (the greatest paths go first), code changes land exactly."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from daemon import ids
from daemon.models import ContainerRecord, FileRecord, Status
from daemon.store import Store
from sandbox import pathnames

CID = ids.container_id()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "state.db")
    await s.open()
    await s.containers.insert(ContainerRecord(CID, "o", "n", 1, 1, Status.RUNNING, "1g", 20, "oci"))
    yield s
    await s.close()


def _ids() -> Callable[[], str]:
    return ids.container_file_id


async def _paths(store: Store) -> list[str]:
    page = await store.container_files.page(CID, None, 100, False)
    return sorted(r.path for r in page.items)


async def test_a_truncated_listing_reconciles_what_it_covered(store: Store) -> None:
    await store.container_files.sync(
        CID, {"/mnt/data/a": 1, "/mnt/data/m": 1, "/mnt/data/z": 1}, None, 0, _ids(), 100
    )
    # A listing cut short after /mnt/data/n: /mnt/data/a is gone, /mnt/data/z is beyond it.
    found = {"/mnt/data/b": 2, "/mnt/data/m": 5, "/mnt/data/n": 1}
    await store.container_files.sync(CID, found, pathnames.raw("/mnt/data/n"), 0, _ids(), 100)
    assert await _paths(store) == ["/mnt/data/b", "/mnt/data/m", "/mnt/data/n", "/mnt/data/z"]
    page = await store.container_files.page(CID, None, 100, False)
    assert page.truncated and {r.path: r.bytes for r in page.items}["/mnt/data/m"] == 5
    await store.container_files.sync(CID, {"/mnt/data/b": 2}, None, 0, _ids(), 100)  # complete
    page = await store.container_files.page(CID, None, 100, False)
    assert [r.path for r in page.items] == ["/mnt/data/b"] and not page.truncated


async def test_byte_order_decides_what_a_listing_covered(store: Store) -> None:
    """'%FF' (the byte 0xFF) sorts after every UTF-8 name, whatever its escape looks like."""
    await store.container_files.sync(
        CID, {"/mnt/data/%FF": 1, "/mnt/data/\u00e9": 1}, None, 0, _ids(), 9
    )
    await store.container_files.sync(
        CID, {"/mnt/data/a": 1}, pathnames.raw("/mnt/data/\u00e9"), 0, _ids(), 9
    )
    assert await _paths(store) == ["/mnt/data/%FF", "/mnt/data/a"]


async def test_records_are_capped_greatest_paths_first(store: Store) -> None:
    names = [f"/mnt/data/f{i:02d}" for i in range(10)]
    await store.container_files.sync(CID, dict.fromkeys(names, 1), None, 0, _ids(), 100)
    found = {"/mnt/data/g0": 1, "/mnt/data/g1": 1}
    await store.container_files.sync(CID, found, b"/mnt/data/a", 0, _ids(), 8)  # covers nothing old
    assert await _paths(store) == [*names[:6], "/mnt/data/g0", "/mnt/data/g1"]
    upload = FileRecord(ids.container_file_id(), CID, "/mnt/data/zz", "user", 1, 0)
    await store.container_files.insert(upload, 8)
    assert await _paths(store) == [*names[:6], "/mnt/data/g0", "/mnt/data/zz"]  # not the new


async def test_code_changes_land_exactly(store: Store) -> None:
    made = await store.container_files.record_changes(
        CID, {"/mnt/data/a/1": 1, "/mnt/data/a/2": 2}, [], 0, _ids(), 100
    )
    assert sorted(made) == ["/mnt/data/a/1", "/mnt/data/a/2"]
    renamed = await store.container_files.record_changes(
        CID, {"/mnt/data/b/1": 1, "/mnt/data/a/2": 3}, ["/mnt/data/a/1"], 0, _ids(), 100
    )
    assert renamed["/mnt/data/a/2"].id == made["/mnt/data/a/2"].id  # same file, same id
    assert renamed["/mnt/data/a/2"].bytes == 3
    assert await _paths(store) == ["/mnt/data/a/2", "/mnt/data/b/1"]


async def test_many_containers_do_not_share_a_cap(store: Store) -> None:
    other = ids.container_id()
    await store.containers.insert(ContainerRecord(other, "o", "n", 1, 1, Status.RUNNING, "1g",
                                                  20, "oci"))  # fmt: skip
    counter = itertools.count()
    for cid in (CID, other):
        found = {f"/mnt/data/{next(counter)}": 1 for _ in range(5)}
        await store.container_files.sync(cid, found, None, 0, _ids(), 5)
    assert len(await _paths(store)) == 5
