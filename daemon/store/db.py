"""The state database's one connection, on its one thread: open (migrating), close, and run a
function there in one transaction. The repositories beside this module are built on it."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from daemon.errors import StorageFull
from daemon.store import migrations


class StoreUnavailable(Exception):
    """The state database cannot be opened (corrupt, locked by another process, unreadable).
    Nothing is changed: the file is left for the operator (or a later start) as it is."""


class Database:
    def __init__(self, path: Path) -> None:
        self._path = path
        # One thread: sqlite work never blocks the event loop, and every transaction runs
        # after the one submitted before it (the container record cache relies on that order).
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="store")
        self._db: sqlite3.Connection | None = None

    async def run[T](self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(connection)` on the store thread, in one transaction (rolled back if it raises)."""

        def call() -> T:
            assert self._db is not None, "store is closed"
            try:
                with self._db:
                    return fn(self._db)
            except sqlite3.OperationalError as exc:
                if "disk is full" in str(exc) or "disk I/O error" in str(exc):
                    raise StorageFull("The daemon's state disk is full.") from exc
                raise

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def open(self) -> None:
        def do_open() -> sqlite3.Connection:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600))  # WAL/SHM inherit it
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            db.isolation_level = "DEFERRED"
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=5000")
            version = migrations.version(db)
            if version > migrations.SCHEMA_VERSION:
                db.close()
                raise StoreUnavailable(
                    f"{self._path}: schema {version} is newer than this sandboxd's "
                    f"({migrations.SCHEMA_VERSION}); run the sandboxd that wrote it"
                )
            migrations.upgrade(db, version)
            return db

        try:
            self._db = await asyncio.get_running_loop().run_in_executor(self._executor, do_open)
        except sqlite3.DatabaseError as exc:  # corrupt ("not a database"), locked, unreadable
            raise StoreUnavailable(f"{self._path}: {exc}") from exc

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.get_running_loop().run_in_executor(self._executor, db.close)
        self._executor.shutdown(wait=True)
