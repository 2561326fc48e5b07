"""The schema: one SQL script per version, applied in order inside its own transaction.

The version lives in sqlite's `user_version`. A database is only ever moved forward; one newer
than SCHEMA_VERSION belongs to a newer sandboxd and is left alone (daemon/store/db.py).
"""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 6
MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE containers (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        last_active_at INTEGER NOT NULL,
        status TEXT NOT NULL,
        memory_limit TEXT NOT NULL,
        expires_minutes INTEGER NOT NULL,
        runtime TEXT NOT NULL,
        status_reason TEXT
    );
    CREATE INDEX containers_owner ON containers (owner, seq);
    CREATE TABLE container_files (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        container_id TEXT NOT NULL REFERENCES containers (id) ON DELETE CASCADE,
        path TEXT NOT NULL,
        source TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (container_id, path)
    );
    """,
    2: """
    CREATE TABLE container_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        container_id TEXT NOT NULL REFERENCES containers (id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        type TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX container_events_container ON container_events (container_id, seq);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    3: """
    CREATE TABLE files (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        filename TEXT NOT NULL,
        purpose TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER
    );
    CREATE INDEX files_owner ON files (owner, seq);
    CREATE INDEX files_expires ON files (expires_at) WHERE expires_at IS NOT NULL;
    CREATE TABLE skills (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        default_version INTEGER NOT NULL,
        latest_version INTEGER NOT NULL
    );
    CREATE INDEX skills_owner ON skills (owner, seq);
    CREATE TABLE skill_versions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        skill_id TEXT NOT NULL REFERENCES skills (id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        name TEXT NOT NULL,
        description TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        UNIQUE (skill_id, version)
    );
    """,
    4: """
    ALTER TABLE containers ADD COLUMN network_policy TEXT;
    CREATE TABLE container_secrets (
        container_id TEXT NOT NULL REFERENCES containers (id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        domain TEXT NOT NULL,
        placeholder TEXT NOT NULL,
        sealed BLOB NOT NULL,
        PRIMARY KEY (container_id, name)
    );
    """,
    5: """
    -- Lists are ordered by `ord`: the id's time key, then the id (daemon/ids.py). Rows made
    -- before ids were time-ordered get their creation second and insertion order instead.
    ALTER TABLE containers ADD COLUMN ord TEXT NOT NULL DEFAULT '';
    UPDATE containers SET ord = printf('%08x%08x', created_at, seq) || id;
    DROP INDEX containers_owner;
    CREATE UNIQUE INDEX containers_ord ON containers (ord);
    CREATE INDEX containers_owner_ord ON containers (owner, ord);
    ALTER TABLE container_files ADD COLUMN ord TEXT NOT NULL DEFAULT '';
    UPDATE container_files SET ord = printf('%08x%08x', created_at, seq) || id;
    CREATE INDEX container_files_ord ON container_files (container_id, ord);
    ALTER TABLE files ADD COLUMN ord TEXT NOT NULL DEFAULT '';
    UPDATE files SET ord = printf('%08x%08x', created_at, seq) || id;
    DROP INDEX files_owner;
    CREATE UNIQUE INDEX files_ord ON files (ord);
    CREATE INDEX files_owner_ord ON files (owner, ord);
    ALTER TABLE skills ADD COLUMN ord TEXT NOT NULL DEFAULT '';
    UPDATE skills SET ord = printf('%08x%08x', created_at, seq) || id;
    DROP INDEX skills_owner;
    CREATE UNIQUE INDEX skills_ord ON skills (ord);
    CREATE INDEX skills_owner_ord ON skills (owner, ord);
    ALTER TABLE skill_versions ADD COLUMN ord TEXT NOT NULL DEFAULT '';
    UPDATE skill_versions SET ord = printf('%08x%08x', created_at, seq) || id;
    CREATE INDEX skill_versions_ord ON skill_versions (skill_id, ord);
    -- Such an old id carries no time: when its row goes, its place is kept here (swept after
    -- a day), so a cursor naming it still continues where it stood.
    CREATE TABLE cursor_tombstones (
        id TEXT PRIMARY KEY,
        ord TEXT NOT NULL,
        deleted_at INTEGER NOT NULL
    );
    CREATE INDEX cursor_tombstones_age ON cursor_tombstones (deleted_at);
    CREATE TRIGGER containers_tombstone AFTER DELETE ON containers
    WHEN substr(old.ord, 1, 16) <> substr(old.id, 6, 16) BEGIN
        INSERT OR REPLACE INTO cursor_tombstones (id, ord, deleted_at)
        VALUES (old.id, old.ord, CAST(strftime('%s', 'now') AS INTEGER));
    END;
    CREATE TRIGGER container_files_tombstone AFTER DELETE ON container_files
    WHEN substr(old.ord, 1, 16) <> substr(old.id, 7, 16) BEGIN
        INSERT OR REPLACE INTO cursor_tombstones (id, ord, deleted_at)
        VALUES (old.id, old.ord, CAST(strftime('%s', 'now') AS INTEGER));
    END;
    CREATE TRIGGER files_tombstone AFTER DELETE ON files
    WHEN substr(old.ord, 1, 16) <> substr(old.id, 6, 16) BEGIN
        INSERT OR REPLACE INTO cursor_tombstones (id, ord, deleted_at)
        VALUES (old.id, old.ord, CAST(strftime('%s', 'now') AS INTEGER));
    END;
    CREATE TRIGGER skills_tombstone AFTER DELETE ON skills
    WHEN substr(old.ord, 1, 16) <> substr(old.id, 7, 16) BEGIN
        INSERT OR REPLACE INTO cursor_tombstones (id, ord, deleted_at)
        VALUES (old.id, old.ord, CAST(strftime('%s', 'now') AS INTEGER));
    END;
    CREATE TRIGGER skill_versions_tombstone AFTER DELETE ON skill_versions
    WHEN substr(old.ord, 1, 16) <> substr(old.id, 10, 16) BEGIN
        INSERT OR REPLACE INTO cursor_tombstones (id, ord, deleted_at)
        VALUES (old.id, old.ord, CAST(strftime('%s', 'now') AS INTEGER));
    END;
    -- Set by a workspace listing that saw only part of the files (the list says so).
    ALTER TABLE containers ADD COLUMN files_truncated INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE idempotency_keys (
        owner TEXT NOT NULL,
        key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        status INTEGER NOT NULL,
        body BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (owner, key)
    );
    CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);
    CREATE INDEX idempotency_keys_owner_age ON idempotency_keys (owner, created_at);
    CREATE TRIGGER container_files_renumbered AFTER UPDATE OF id ON container_files
    WHEN old.id <> new.id AND substr(old.ord, 1, 16) <> substr(old.id, 7, 16) BEGIN
        INSERT OR REPLACE INTO cursor_tombstones (id, ord, deleted_at)
        VALUES (old.id, old.ord, CAST(strftime('%s', 'now') AS INTEGER));
    END;
    """,
    6: """
    -- The image a container runs on (GET /v1/images); containers made before images were
    -- chosen per container ran on the daemon's one image, shown as the host's.
    ALTER TABLE containers ADD COLUMN image TEXT NOT NULL DEFAULT 'host';
    """,
}


def version(db: sqlite3.Connection) -> int:
    """The schema version the database is at (0 for a new, empty file)."""
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def upgrade(db: sqlite3.Connection, current: int) -> None:
    """Apply every migration after `current`, each with its version bump in one transaction,
    so a crash leaves the database at some whole version."""
    for v in range(current + 1, SCHEMA_VERSION + 1):
        with db:
            db.executescript(f"BEGIN;{MIGRATIONS[v]};PRAGMA user_version={v};COMMIT;")
