"""Container files (/v1/containers/{id}/files): the caller's checks, activity, and the
records of what is in the workspace (kept by daemon/workspace_files.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from daemon import ids
from daemon.containers import Caller, ContainerService
from daemon.errors import NotFound
from daemon.models import FileRecord, Page, Status
from daemon.store import Store
from daemon.user_files import FileService, check_filename
from daemon.workspace_files import WorkspaceFiles


class ContainerFileService:
    def __init__(
        self,
        containers: ContainerService,
        workspace: WorkspaceFiles,
        store: Store,
        user_files: FileService,
    ) -> None:
        self._containers = containers
        self._workspace = workspace
        self._store = store
        self._user_files = user_files

    async def upload(
        self, caller: Caller, cid: str, filename: str, data: AsyncIterator[bytes]
    ) -> FileRecord:
        await self._containers.running(caller, cid)
        check_filename(filename)
        async with self._containers.active(cid):  # no await since the status check
            return await self._workspace.write(cid, filename, data)

    async def copy_file(self, caller: Caller, cid: str, file_id: str) -> FileRecord:
        """POST /v1/containers/{id}/files with {"file_id"}: like an upload, from a stored file."""
        sources = await self._user_files.resolve(caller, [file_id])
        await self._containers.running(caller, cid)
        async with self._containers.active(cid):  # no await since the status check
            return (await self._workspace.copy_in(cid, sources))[0]

    async def list_files(
        self, caller: Caller, cid: str, after: str | None, limit: int, desc: bool
    ) -> Page[FileRecord]:
        rec = await self._containers.get(caller, cid)
        if rec.status == Status.RUNNING and after is None:
            await self._workspace.scan(cid)  # later pages read the records the first refreshed
        return await self._store.container_files.page(cid, after, limit, desc)

    async def get_file(self, caller: Caller, cid: str, fid: str) -> FileRecord:
        rec = await self._containers.get(caller, cid)
        if rec.status == Status.RUNNING and ids.CONTAINER_FILE_ID.fullmatch(fid):
            await self._workspace.scan(cid)
        return await self._found(cid, fid)

    async def _found(self, cid: str, fid: str) -> FileRecord:
        found = await self._store.container_files.get(cid, fid)
        if found is None:
            raise NotFound(f"No file found with id '{fid}'.", param="file_id")
        return found

    @contextlib.asynccontextmanager
    async def file_content(
        self, caller: Caller, cid: str, fid: str
    ) -> AsyncIterator[tuple[FileRecord, int, AsyncIterator[bytes]]]:
        await self._containers.running(caller, cid)
        async with self._containers.active(cid):
            found = await self._found(cid, fid)
            async with self._workspace.read(cid, found) as (size, chunks):
                yield found, size, chunks

    async def delete_file(self, caller: Caller, cid: str, fid: str) -> None:
        await self._containers.running(caller, cid)
        await self._workspace.delete(cid, await self._found(cid, fid))
