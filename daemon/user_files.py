"""Files uploaded through /v1/files: records in the store, bytes in blobs under the state dir.

Blobs are streamed in (a temp name, fsync, rename) and out (chunk by chunk) on threads, never
whole in memory. Caps: per file, per owner (bytes and count). An expired file answers 404 at
once; the sweep (a periodic task of the daemon) removes its record and blob.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from daemon import ids
from daemon.config import FilesConfig
from daemon.errors import DomainError, InvalidRequest, NotFound, PayloadTooLarge, QuotaExceeded
from daemon.models import Page, UserFileRecord
from daemon.store import Store
from sandbox import pathnames

logger = logging.getLogger(__name__)

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
CHUNK = 256 << 10
SWEEP_BATCH = 500


class Owner(Protocol):
    """Who asks (the service layer's Caller)."""

    @property
    def owner(self) -> str: ...

    @property
    def admin(self) -> bool: ...


@dataclass
class StagedBlob:
    """Bytes received for an upload that is not committed yet (a temp file)."""

    path: Path
    size: int
    committed: bool = False


async def read_blob(path: Path, gone: DomainError) -> AsyncGenerator[bytes]:
    """A stored blob's bytes, chunk by chunk, read on a thread; `gone` if it is missing."""
    try:
        f = await asyncio.to_thread(open, path, "rb")
    except FileNotFoundError:
        raise gone from None
    try:
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            yield chunk
    finally:
        await asyncio.to_thread(f.close)


def api_filename(sent: str) -> str:
    """A multipart part's filename (surrogate-escaped where it is not UTF-8) in API form."""
    try:
        return pathnames.to_api(sent)
    except ValueError:
        raise InvalidRequest("The file name is not a sequence of bytes.", param="file") from None


def check_filename(name: str) -> None:
    """A plain file name in API form (what `/mnt/data/<name>` and /v1/files keep); 400
    saying what is wrong."""
    raw = pathnames.raw(name)
    if not raw or raw in (b".", b".."):
        problem = "is empty" if not raw else f"is {name!r}"
    elif b"/" in raw:
        problem = "contains '/'"
    elif b"\\" in raw:
        problem = "contains a backslash"
    elif b"\0" in raw:
        problem = "contains NUL"
    elif len(raw) > 255:
        problem = f"is {len(raw)} bytes long (at most 255)"
    elif raw.startswith(b".sandboxd-upload-"):
        problem = "uses the reserved prefix '.sandboxd-upload-'"
    else:
        return
    raise InvalidRequest(
        f"Invalid file name {name[:100]!r}: it {problem}. Use a plain file name, without folders.",
        param="file",
    )


def _now() -> int:
    return int(time.time())


def _fsync_close(f: BinaryIO) -> None:
    try:
        f.flush()
        os.fsync(f.fileno())
    finally:
        f.close()


class FileService:
    def __init__(self, config: FilesConfig, store: Store, blob_dir: Path) -> None:
        self._cfg = config
        self._store = store
        self._dir = blob_dir / "files"
        self._tmp = blob_dir / "tmp"
        self._commit_lock = asyncio.Lock()

    def blob_path(self, fid: str) -> Path:
        return self._dir / fid

    async def start(self) -> None:
        """Create the blob dirs; drop temp leftovers and blobs that have no record."""
        known = await self._store.files.ids()

        def prepare() -> int:
            removed = 0
            for d in (self._dir, self._tmp):
                d.mkdir(parents=True, exist_ok=True, mode=0o700)
            for entry in self._tmp.iterdir():  # uploads and skill staging dirs left by a crash
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed += 1
            for entry in self._dir.iterdir():
                if entry.name not in known:
                    entry.unlink(missing_ok=True)
                    removed += 1
            return removed

        removed = await asyncio.to_thread(prepare)
        if removed:
            logger.info("stale blobs removed", extra={"count": removed})

    # ------------------------------------------------------------------- uploads

    async def receive(self, caller: Owner, chunks: AsyncIterator[bytes]) -> StagedBlob:
        """Stream an upload into a temp file with a running cap; 413 (and nothing left) over it."""
        count, used = await self._store.files.usage(caller.owner, _now())
        if count >= self._cfg.max_files_per_owner:
            raise QuotaExceeded(f"At most {self._cfg.max_files_per_owner} files per owner.")
        cap = min(self._cfg.max_file_bytes, self._cfg.max_owner_bytes - used)
        path = self._tmp / f"{secrets.token_hex(16)}.part"
        f = await asyncio.to_thread(open, path, "xb")
        size = 0
        ok = False
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > cap:
                    raise self._too_large(cap)
                await asyncio.to_thread(f.write, chunk)
            await asyncio.to_thread(_fsync_close, f)
            ok = True
        finally:
            if not ok:
                await asyncio.to_thread(_discard, f, path)
        return StagedBlob(path, size)

    def _too_large(self, cap: int) -> PayloadTooLarge:
        if cap >= self._cfg.max_file_bytes:
            return PayloadTooLarge(
                f"The file exceeds {self._cfg.max_file_bytes} bytes.", param="file"
            )
        return PayloadTooLarge(
            f"The upload exceeds the {self._cfg.max_owner_bytes} bytes one owner may store.",
            param="file",
        )

    async def discard(self, staged: StagedBlob) -> None:
        if not staged.committed:
            await asyncio.to_thread(staged.path.unlink, missing_ok=True)

    async def commit(
        self,
        caller: Owner,
        staged: StagedBlob,
        filename: str,
        purpose: str,
        expires_seconds: int | None,
    ) -> UserFileRecord:
        check_filename(filename)
        async with self._commit_lock:  # the per-owner caps hold under concurrent uploads
            now = _now()
            count, used = await self._store.files.usage(caller.owner, now)
            if count >= self._cfg.max_files_per_owner:
                raise QuotaExceeded(f"At most {self._cfg.max_files_per_owner} files per owner.")
            if used + staged.size > self._cfg.max_owner_bytes:
                raise self._too_large(0)
            rec = UserFileRecord(
                id=ids.user_file_id(),
                owner=caller.owner,
                filename=filename,
                purpose=purpose,
                bytes=staged.size,
                created_at=now,
                expires_at=None if expires_seconds is None else now + expires_seconds,
            )
            await asyncio.to_thread(_publish, staged.path, self.blob_path(rec.id))
            staged.committed = True
            try:
                await self._store.files.insert(rec)
            except BaseException:
                await asyncio.to_thread(self.blob_path(rec.id).unlink, missing_ok=True)
                raise
        logger.info("file stored", extra={"file_id": rec.id, "bytes": rec.bytes})
        return rec

    # ------------------------------------------------------------------- reading

    async def get(self, caller: Owner, fid: str) -> UserFileRecord:
        rec = None
        if ids.USER_FILE_ID.fullmatch(fid):
            rec = await self._store.files.get(fid, _now())
        if rec is None or (not caller.admin and rec.owner != caller.owner):
            raise NotFound(f"No such File object: '{fid}'.", param="file_id")
        return rec

    async def resolve(self, caller: Owner, fids: list[str]) -> list[UserFileRecord]:
        """Every id, or 404 naming the first unknown (or foreign, or expired) one."""
        return [await self.get(caller, fid) for fid in fids]

    async def list_files(
        self, caller: Owner, purpose: str | None, after: str | None, limit: int, desc: bool
    ) -> Page[UserFileRecord]:
        owner = None if caller.admin else caller.owner
        return await self._store.files.page(owner, purpose, _now(), after, limit, desc)

    def chunks(self, rec: UserFileRecord) -> AsyncGenerator[bytes]:
        gone = NotFound(f"No such File object: '{rec.id}'.", param="file_id")
        return read_blob(self.blob_path(rec.id), gone)

    async def delete(self, caller: Owner, fid: str) -> None:
        rec = await self.get(caller, fid)
        await self._remove(rec.id)
        logger.info("file deleted", extra={"file_id": rec.id})

    async def _remove(self, fid: str) -> None:
        await self._store.files.delete(fid)
        await asyncio.to_thread(self.blob_path(fid).unlink, missing_ok=True)

    # -------------------------------------------------------------------- expiry

    async def sweep(self) -> int:
        """Remove expired files (records and blobs); returns how many."""
        gone = await self._store.files.expired(_now(), SWEEP_BATCH)
        for fid in gone:
            await self._remove(fid)
        if gone:
            logger.info("expired files removed", extra={"count": len(gone)})
        return len(gone)

    async def run_sweeper(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                logger.exception("file sweep failed")
            await asyncio.sleep(self._cfg.sweep_interval_s)


def _discard(f: BinaryIO, path: Path) -> None:
    with contextlib.suppress(OSError):
        f.close()
    path.unlink(missing_ok=True)


def _publish(tmp: Path, final: Path) -> None:
    os.rename(tmp, final)
    fd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
