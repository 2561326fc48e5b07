"""Durable state in SQLite (WAL), on one dedicated thread; the only package that imports sqlite3.

`Store` is what the composition root builds, opens and closes: it owns the one connection
(db.py; its schema: migrations.py) and hands out a repository per aggregate, all built on
that connection, so every transaction still runs in order on the one store thread.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from daemon.store import idempotency, pages
from daemon.store.container_files import ContainerFiles
from daemon.store.containers import Containers, committed_memory
from daemon.store.db import Database, StoreUnavailable
from daemon.store.idempotency import IdempotencyKeys
from daemon.store.meta import Meta
from daemon.store.skills import Skills
from daemon.store.user_files import UserFiles

__all__ = ["Store", "StoreUnavailable", "committed_memory"]


class Store:
    def __init__(self, path: Path) -> None:
        self._db = Database(path)
        self.containers = Containers(self._db)  # with their events and sealed secrets
        self.container_files = ContainerFiles(self._db)  # the workspace file index
        self.files = UserFiles(self._db)  # uploaded through /v1/files
        self.skills = Skills(self._db)
        self.idempotency = IdempotencyKeys(self._db)
        self.meta = Meta(self._db)

    async def open(self) -> None:
        """Open (creating or migrating) the database; StoreUnavailable if it cannot be."""
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def sweep(self, before: int) -> tuple[int, int]:
        """Forget idempotency keys and deleted old ids' places older than `before`: the
        store's one periodic housekeeping (run by daemon/idempotency.py), in one transaction."""

        def run(db: sqlite3.Connection) -> tuple[int, int]:
            return idempotency.forget_before(db, before), pages.forget_places(db, before)

        return await self._db.run(run)
