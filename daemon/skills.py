"""Skills: immutable versions of a validated, normalised zip, owned like containers.

Each version's zip is a blob `<state>/blobs/skills/<version id>.zip` written by
sandbox/skill_archive.py (on a thread) to a temp name, fsynced and renamed. For a container,
references resolve to (name, description, zip) triples the runtime extracts read-only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import secrets
import shutil
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path

from daemon import ids
from daemon.config import SkillsConfig
from daemon.errors import InvalidRequest, NotFound, QuotaExceeded
from daemon.models import Page, SkillRecord, SkillVersionRecord
from daemon.store import Store
from daemon.user_files import Owner, read_blob
from sandbox.skill_archive import SkillArchiveError, SkillManifest, repack_files, repack_zip
from sandbox.spec import SkillFiles

logger = logging.getLogger(__name__)

CHUNK = 256 << 10
ZIP_MAGIC = b"PK\x03\x04"


@dataclass
class SkillUpload:
    """What a multipart upload staged: parts as (path sent, temp file) in a temp dir."""

    tmp_dir: Path
    parts: list[tuple[str, Path]] = field(default_factory=list)
    as_array: bool = False  # sent as `files[]` (a directory), not one `files` part


@dataclass(frozen=True)
class SkillRef:
    """A container create's `skills` item: a reference, or an inline base64 zip."""

    skill_id: str = ""
    version: str | None = None  # None: the default; "latest"; or "N"
    inline_zip: str = ""  # base64; the mount name is the one in its SKILL.md


def _now() -> int:
    return int(time.time())


def parse_version(raw: str, param: str = "version") -> int:
    if not raw.isdigit() or len(raw) > 9 or int(raw) < 1:
        raise InvalidRequest(
            f"Invalid value for '{param}': expected a positive integer.", param=param
        )
    return int(raw)


class SkillService:
    def __init__(self, config: SkillsConfig, store: Store, blob_dir: Path) -> None:
        self._cfg = config
        self._limits = config.limits()
        self._store = store
        self._dir = blob_dir / "skills"
        self._tmp = blob_dir / "tmp"

    def blob_path(self, version_id: str) -> Path:
        return self._dir / f"{version_id}.zip"

    async def start(self) -> None:
        known = await self._store.skills.version_ids()

        def prepare() -> None:
            for d in (self._dir, self._tmp):
                d.mkdir(parents=True, exist_ok=True, mode=0o700)
            for entry in self._dir.iterdir():
                if entry.name.removesuffix(".zip") not in known:
                    entry.unlink(missing_ok=True)

        await asyncio.to_thread(prepare)

    async def staging(self) -> SkillUpload:
        path = self._tmp / f"skill-{secrets.token_hex(12)}"
        await asyncio.to_thread(path.mkdir, mode=0o700)
        return SkillUpload(path)

    async def discard(self, upload: SkillUpload) -> None:
        await asyncio.to_thread(shutil.rmtree, upload.tmp_dir, True)

    # ---------------------------------------------------------------- packing

    async def _pack(self, upload: SkillUpload, version_id: str) -> tuple[SkillManifest, int]:
        """Validate and repack into the version's blob; (manifest, zip bytes)."""
        if not upload.parts:
            raise InvalidRequest("Missing required parameter: 'files'.", param="files")
        out = upload.tmp_dir / "packed.zip"

        def pack() -> tuple[SkillManifest, int]:
            if not upload.as_array and len(upload.parts) == 1:
                with open(upload.parts[0][1], "rb") as f:
                    is_zip = f.read(4) == ZIP_MAGIC
                if is_zip:
                    found = repack_zip(upload.parts[0][1], out, self._limits)
                else:
                    found = repack_files(upload.parts, out, self._limits)
            else:
                found = repack_files(upload.parts, out, self._limits)
            with open(out, "rb+") as f:
                os.fsync(f.fileno())
            size = out.stat().st_size
            os.rename(out, self.blob_path(version_id))
            return found, size

        try:
            return await asyncio.to_thread(pack)
        except SkillArchiveError as exc:
            raise InvalidRequest(f"Invalid skill: {exc}", param="files") from None

    def _version(
        self, vid: str, sid: str, number: int, found: SkillManifest, size: int
    ) -> SkillVersionRecord:
        return SkillVersionRecord(vid, sid, number, _now(), found.name, found.description, size)

    # ----------------------------------------------------------------- skills

    async def create(self, caller: Owner, upload: SkillUpload) -> SkillRecord:
        cap = self._cfg.max_skills_per_owner
        if await self._store.skills.count(caller.owner) >= cap:
            raise QuotaExceeded(f"At most {cap} skills per owner.")
        sid, vid = ids.skill_id(), ids.skill_version_id()
        found, size = await self._pack(upload, vid)
        try:
            await self._store.skills.insert(
                sid, caller.owner, self._version(vid, sid, 1, found, size)
            )
        except BaseException:
            await asyncio.to_thread(self.blob_path(vid).unlink, missing_ok=True)
            raise
        logger.info("skill created", extra={"skill_id": sid, "skill": found.name})
        return await self.get(caller, sid)

    async def get(self, caller: Owner, sid: str) -> SkillRecord:
        rec = await self._store.skills.get(sid) if ids.SKILL_ID.fullmatch(sid) else None
        if rec is None or (not caller.admin and rec.owner != caller.owner):
            raise NotFound(f"No skill found with id '{sid}'.", param="skill_id")
        return rec

    async def list_skills(
        self, caller: Owner, after: str | None, limit: int, desc: bool
    ) -> Page[SkillRecord]:
        owner = None if caller.admin else caller.owner
        return await self._store.skills.page(owner, after, limit, desc)

    async def set_default(self, caller: Owner, sid: str, version: int) -> SkillRecord:
        await self.get(caller, sid)
        if not await self._store.skills.set_default_version(sid, version):
            raise NotFound(f"Skill '{sid}' has no version {version}.", param="default_version")
        return await self.get(caller, sid)

    async def delete(self, caller: Owner, sid: str) -> None:
        await self.get(caller, sid)
        for vid in await self._store.skills.delete(sid):
            await asyncio.to_thread(self.blob_path(vid).unlink, missing_ok=True)
        logger.info("skill deleted", extra={"skill_id": sid})

    # --------------------------------------------------------------- versions

    async def add_version(
        self, caller: Owner, sid: str, upload: SkillUpload, make_default: bool
    ) -> SkillVersionRecord:
        await self.get(caller, sid)
        vid = ids.skill_version_id()
        found, size = await self._pack(upload, vid)
        rec = await self._store.skills.add_version(
            sid, lambda n: self._version(vid, sid, n, found, size), make_default
        )
        if rec is None:
            await asyncio.to_thread(self.blob_path(vid).unlink, missing_ok=True)
            raise NotFound(f"No skill found with id '{sid}'.", param="skill_id")
        return rec

    async def get_version(self, caller: Owner, sid: str, version: str) -> SkillVersionRecord:
        skill = await self.get(caller, sid)
        if version == "latest":
            number = skill.latest_version
        elif version.isdigit() and len(version) <= 9:
            number = int(version)
        else:
            number = 0
        rec = await self._store.skills.get_version(sid, number) if number else None
        if rec is None:
            raise NotFound(f"Skill '{sid}' has no version '{version[:20]}'.", param="version")
        return rec

    async def default_version(self, caller: Owner, sid: str) -> SkillVersionRecord:
        skill = await self.get(caller, sid)
        return await self.get_version(caller, sid, str(skill.default_version))

    async def list_versions(
        self, caller: Owner, sid: str, after: str | None, limit: int, desc: bool
    ) -> Page[SkillVersionRecord]:
        await self.get(caller, sid)
        return await self._store.skills.version_page(sid, after, limit, desc)

    async def delete_version(self, caller: Owner, sid: str, version: str) -> SkillVersionRecord:
        rec = await self.get_version(caller, sid, version)
        outcome = await self._store.skills.delete_version(sid, rec.version)
        if outcome == "is_default":
            raise InvalidRequest(
                "The default version cannot be deleted; set another default first.",
                param="version",
            )
        if outcome == "missing":
            raise NotFound(f"Skill '{sid}' has no version '{version[:20]}'.", param="version")
        await asyncio.to_thread(self.blob_path(rec.id).unlink, missing_ok=True)
        return rec

    def chunks(self, rec: SkillVersionRecord) -> AsyncGenerator[bytes]:
        gone = NotFound(f"Skill version '{rec.id}' is gone.", param="version")
        return read_blob(self.blob_path(rec.id), gone)

    # ------------------------------------------------------------- containers

    async def resolve(
        self, caller: Owner, refs: list[SkillRef], tmp_dir: Path | None
    ) -> list[SkillFiles]:
        """Every reference (404 if unknown/foreign) and inline zip (400 if invalid), as zips."""
        out: list[SkillFiles] = []
        for ref in refs:
            if ref.inline_zip:
                assert tmp_dir is not None
                out.append(await self._inline(ref, tmp_dir, len(out)))
                continue
            if ref.version is None:
                rec = await self.default_version(caller, ref.skill_id)
            else:
                rec = await self.get_version(caller, ref.skill_id, ref.version)
            out.append(SkillFiles(rec.name, rec.description, self.blob_path(rec.id)))
        names = [s.name for s in out]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise InvalidRequest(f"Two skills are named '{dup}'.", param="skills")
        return out

    async def _inline(self, ref: SkillRef, tmp_dir: Path, index: int) -> SkillFiles:
        param = f"skills[{index}].source.data"
        src, dst = tmp_dir / f"inline-{index}.zip", tmp_dir / f"inline-{index}.packed.zip"

        def pack() -> SkillManifest:
            try:
                raw = base64.b64decode(ref.inline_zip, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidRequest("Invalid base64 in the inline skill.", param=param) from None
            if len(raw) > self._limits.max_zip_bytes:
                raise InvalidRequest(
                    f"The inline skill exceeds {self._limits.max_zip_bytes} bytes.", param=param
                )
            src.write_bytes(raw)
            return repack_zip(src, dst, self._limits)

        try:
            found = await asyncio.to_thread(pack)
        except SkillArchiveError as exc:
            raise InvalidRequest(f"Invalid inline skill: {exc}", param=param) from None
        return SkillFiles(found.name, found.description, dst)
