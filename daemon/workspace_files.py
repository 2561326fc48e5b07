"""A container's workspace (/mnt/data) as file records: writes, copies of /v1/files, reads,
deletes and the scan that keeps the records in line with what code wrote. No callers here:
the container files service (daemon/container_files.py) checks those, and create copies
file_ids in through `copy_in`."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator

from daemon import ids
from daemon.config import Config
from daemon.errors import NotFound
from daemon.models import FileRecord, UserFileRecord
from daemon.sandboxes import Sandboxes
from daemon.store import Store
from daemon.user_files import FileService
from sandbox import pathnames
from sandbox.spec import WORKSPACE

logger = logging.getLogger(__name__)


def _now() -> int:
    return int(time.time())


class WorkspaceFiles:
    def __init__(
        self, config: Config, store: Store, sandboxes: Sandboxes, user_files: FileService
    ) -> None:
        self._cfg = config.containers
        self._store = store
        self._sandboxes = sandboxes
        self._user_files = user_files

    async def scan(self, cid: str) -> None:
        """Bring the container's file records in line with its workspace. A workspace with
        more files than one listing sees (`max_files_listed`) is listed in byte order of the
        paths and cut short: records up to the last listed path are reconciled, the rest kept
        (within `max_file_records`), and the list says `workspace_truncated`."""
        cfg = self._cfg
        async with self._sandboxes.agent(cid, "list files") as agent:
            listing = await agent.list_files(WORKSPACE, cfg.max_files_listed)
        found = {f.path: f.bytes for f in listing.files}
        upto: bytes | None = None  # complete: every record not found is gone
        if listing.truncated:
            # An agent from before ordered listings may cut anywhere: then forget nothing.
            ordered = listing.ordered and found
            upto = max(pathnames.raw(p) for p in found) if ordered else b""
        await self._store.container_files.sync(
            cid, found, upto, _now(), ids.container_file_id, cfg.max_file_records
        )

    async def write(self, cid: str, filename: str, data: AsyncIterator[bytes]) -> FileRecord:
        """An upload: streamed into /mnt/data under `filename` (` (1)` on a clash)."""
        async with self._sandboxes.agent(cid, "upload") as agent:
            path, size = await agent.write_file(
                WORKSPACE, filename, data, self._cfg.max_upload_bytes
            )
        rec = await self._record(cid, path, size)
        logger.info("file uploaded", extra={"bytes": size})
        return rec

    async def copy_in(self, cid: str, sources: list[UserFileRecord]) -> list[FileRecord]:
        """Copy /v1/files blobs into /mnt/data through the agent (streamed, ` (1)` on a clash)."""
        copied: list[FileRecord] = []
        for src in sources:
            async with self._sandboxes.agent(cid, "copy file") as agent:
                chunks = self._user_files.chunks(src)
                path, size = await agent.write_file(
                    WORKSPACE, src.filename, chunks, max(src.bytes, 1)
                )
            copied.append(await self._record(cid, path, size))
        if copied:
            logger.info("files copied", extra={"count": len(copied)})
        return copied

    async def _record(self, cid: str, path: str, size: int) -> FileRecord:
        rec = FileRecord(ids.container_file_id(), cid, path, "user", size, _now())
        await self._store.container_files.insert(rec, self._cfg.max_file_records)
        return rec

    @contextlib.asynccontextmanager
    async def read(
        self, cid: str, found: FileRecord
    ) -> AsyncIterator[tuple[int, AsyncIterator[bytes]]]:
        """(size, chunks) of the file, for the block; a failure half way is translated."""
        cap = self._cfg.max_download_bytes
        async with (
            self._sandboxes.agent(cid, "download") as agent,
            agent.read_file(found.path, cap) as (size, chunks),
        ):
            yield size, chunks

    async def delete(self, cid: str, found: FileRecord) -> None:
        """The file and its record; a file already gone from the workspace is no error."""
        with contextlib.suppress(NotFound):
            async with self._sandboxes.agent(cid, "delete file") as agent:
                await agent.delete_file(found.path)
        await self._store.container_files.delete(found.id)
