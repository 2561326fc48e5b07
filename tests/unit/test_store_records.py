"""Records come out of the store decoded: no caller parses a store column. The bytes on disk
stay what they were when callers encoded the policy themselves (json.dumps' defaults)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from daemon.models import ContainerRecord, Status
from daemon.store import Store

POLICY = {"type": "allowlist", "allowed_domains": ["api.example.com", "*.example.org"]}


async def test_a_network_policy_is_stored_as_before_and_read_decoded(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = Store(path)
    await store.open()
    try:
        base = ("owner", "n", 100, 100, Status.RUNNING, "1g", 20, "oci")
        await store.containers.insert(ContainerRecord("c1", *base, None, POLICY))
        await store.containers.insert(ContainerRecord("c2", *base))
    finally:
        await store.close()
    db = sqlite3.connect(path)
    try:
        rows = dict(db.execute("SELECT id, network_policy FROM containers").fetchall())
    finally:
        db.close()
    assert rows == {"c1": json.dumps(POLICY), "c2": None}
    store = Store(path)  # a fresh store: read from the database, not the record cache
    await store.open()
    try:
        first = await store.containers.get("c1")
        second = await store.containers.get("c2")
        assert first is not None and first.network_policy == POLICY
        assert second is not None and second.network_policy is None
    finally:
        await store.close()
