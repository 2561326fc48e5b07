"""Skill archives: validate an uploaded zip or directory and repack it as a normalised zip.

Pure and synchronous (callers run it on a thread). What comes in is hostile: every path is
normalised and checked (no absolute paths, no `..`, no backslashes), symlinks and device
entries are refused, sizes are capped as declared *and* as actually read, and a compression
ratio guard stops zip bombs. The output zip holds regular files only, under one top-level
folder named after the skill, which is what gets extracted on the host for a sandbox.
"""

from __future__ import annotations

import re
import stat
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
SINGLE_QUOTED = re.compile(r"'((?:[^']|'')*)'\s*(?:#.*)?")
DOUBLE_QUOTED = re.compile(r'"([^"\\]*)"\s*(?:#.*)?')
MAX_NAME = 64
MAX_DESCRIPTION = 1024
MAX_SKILL_MD = 1 << 20
RATIO_FLOOR = 1 << 20  # entries smaller than this are never bombs, whatever their ratio
COPY_CHUNK = 1 << 20


class SkillArchiveError(ValueError):
    """The upload is not a valid skill; the message says why (sent to the client)."""


@dataclass(frozen=True)
class SkillLimits:
    max_zip_bytes: int = 50 << 20
    max_files: int = 500
    max_file_bytes: int = 25 << 20
    max_total_bytes: int = 100 << 20
    max_ratio: int = 100


@dataclass(frozen=True)
class SkillManifest:
    name: str
    description: str
    files: tuple[tuple[str, int], ...]  # (path inside the skill folder, bytes)

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)


Opener = Callable[[], IO[bytes]]


@dataclass(frozen=True)
class _Entry:
    parts: tuple[str, ...]  # normalised, top-level folder included when there is one
    size: int
    open: Opener


def normalise(raw: str) -> tuple[str, ...]:
    """The path's components, or SkillArchiveError for anything that could escape."""
    if not raw or "\0" in raw:
        raise SkillArchiveError("An empty or NUL-containing path is not allowed.")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        shown = raw.encode("utf-8", "backslashreplace").decode("utf-8")
        raise SkillArchiveError(f"Path {shown[:200]!r} is not UTF-8.") from None
    if "\\" in raw:
        raise SkillArchiveError(f"Path {raw[:200]!r} contains a backslash.")
    if raw.startswith("/") or re.match(r"[A-Za-z]:", raw):
        raise SkillArchiveError(f"Absolute path {raw[:200]!r} is not allowed.")
    parts = tuple(p for p in raw.split("/") if p not in ("", "."))
    if any(p == ".." for p in parts):
        raise SkillArchiveError(f"Path {raw[:200]!r} leaves the skill folder ('..').")
    if not parts:
        raise SkillArchiveError(f"Path {raw[:200]!r} names no file.")
    if any(len(p.encode("utf-8", "surrogateescape")) > 255 for p in parts) or len(raw) > 1024:
        raise SkillArchiveError(f"Path {raw[:200]!r} is too long.")
    return parts


def parse_front_matter(text: str) -> tuple[str, str]:
    """(name, description) from SKILL.md's YAML front matter (the scalar subset skills use)."""
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        raise SkillArchiveError("SKILL.md must start with YAML front matter ('---').")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise SkillArchiveError("SKILL.md front matter is not closed ('---').") from None
    values = _scalars(lines[1:end])
    name, description = values.get("name", ""), values.get("description", "")
    if not name:
        raise SkillArchiveError("SKILL.md front matter needs a 'name'.")
    if len(name) > MAX_NAME or not NAME.fullmatch(name):
        raise SkillArchiveError(
            f"Invalid skill name {name[:100]!r}: 1-64 characters of a-z, 0-9 and '-', "
            "no leading, trailing or double '-'."
        )
    if not description.strip():
        raise SkillArchiveError("SKILL.md front matter needs a 'description'.")
    if len(description) > MAX_DESCRIPTION:
        raise SkillArchiveError(f"The description is longer than {MAX_DESCRIPTION} characters.")
    return name, description.strip()


def _scalars(lines: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#") or line[0] in " \t":
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise SkillArchiveError(
                f"SKILL.md front matter line {line[:80]!r} is not 'key: value'."
            )
        key, value = key.strip(), value.strip()
        if value in ("|", ">", "|-", ">-", "|+", ">+"):
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i][0] in " \t"):
                block.append(lines[i].strip())
                i += 1
            joiner = "\n" if value.startswith("|") else " "
            value = joiner.join(block).strip()
        elif m := SINGLE_QUOTED.fullmatch(value):
            value = m.group(1).replace("''", "'")
        elif m := DOUBLE_QUOTED.fullmatch(value):
            value = m.group(1)
        elif value[:1] in ("'", '"'):
            raise SkillArchiveError(f"SKILL.md front matter value for {key!r} is not closed.")
        else:
            value = value.split(" #", 1)[0].strip()
        if key in out:
            raise SkillArchiveError(f"SKILL.md front matter repeats {key!r}.")
        out[key] = value
    return out


# --------------------------------------------------------------------------- sources


def zip_entries(src: Path, limits: SkillLimits) -> tuple[zipfile.ZipFile, list[_Entry]]:
    """The zip's regular files, checked; the caller closes the ZipFile."""
    if src.stat().st_size > limits.max_zip_bytes:
        raise SkillArchiveError(f"The zip exceeds {limits.max_zip_bytes} bytes.")
    try:
        zf = zipfile.ZipFile(src)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SkillArchiveError(f"Not a valid zip file: {exc}.") from None
    try:
        infos = zf.infolist()
        if len(infos) > limits.max_files * 2 + 16:
            raise SkillArchiveError(f"The zip holds more than {limits.max_files} files.")
        entries: list[_Entry] = []
        for info in infos:
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if info.create_system == 3 and kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                what = "a symlink" if kind == stat.S_IFLNK else "a device or special file"
                raise SkillArchiveError(f"Entry {info.filename[:200]!r} is {what}.")
            parts = normalise(info.filename)
            if info.is_dir() or kind == stat.S_IFDIR:
                continue
            if info.flag_bits & 0x1:
                raise SkillArchiveError(f"Entry {info.filename[:200]!r} is encrypted.")
            if info.file_size > limits.max_file_bytes:
                raise SkillArchiveError(
                    f"File {info.filename[:200]!r} exceeds {limits.max_file_bytes} bytes."
                )
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > RATIO_FLOOR and ratio > limits.max_ratio:
                raise SkillArchiveError(
                    f"File {info.filename[:200]!r} expands {ratio:.0f}x "
                    f"(more than {limits.max_ratio}x): refused as a zip bomb."
                )
            entries.append(_Entry(parts, info.file_size, _zip_opener(zf, info)))
    except BaseException:
        zf.close()
        raise
    return zf, entries


def _zip_opener(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Opener:
    return lambda: zf.open(info)


def file_entries(parts: list[tuple[str, Path]]) -> list[_Entry]:
    """Directory upload: (path as sent, staged temp file) pairs."""
    out = []
    for raw, staged in parts:
        size = staged.stat().st_size
        out.append(_Entry(normalise(raw), size, _file_opener(staged)))
    return out


def _file_opener(path: Path) -> Opener:
    return lambda: open(path, "rb")  # the packer closes it


# ---------------------------------------------------------------------- the packer


def _folder(entries: list[_Entry]) -> tuple[str | None, list[tuple[tuple[str, ...], _Entry]]]:
    """The skill folder's files. A SKILL.md at the top level makes the top level the skill
    folder (`cd skill && zip -r ../s.zip .`); otherwise the one top-level folder is stripped
    (`zip -r s.zip skill`), and files without any folder form an implicit one."""
    loose = [e for e in entries if len(e.parts) == 1]
    if any(e.parts[0].lower() == "skill.md" for e in loose):
        return None, [(e.parts, e) for e in entries]
    tops = sorted({e.parts[0] for e in entries if len(e.parts) > 1})
    if len(tops) > 1 or (tops and loose):
        names = [*tops, *sorted(e.parts[0] for e in loose)]
        shown = ", ".join(repr(n[:60]) for n in names[:4]) + (", ..." if len(names) > 4 else "")
        raise SkillArchiveError(
            f"The upload has several top-level entries ({shown}) and no SKILL.md among them. "
            "Put SKILL.md at the top level (cd skill && zip -r ../skill.zip .) or upload one "
            "folder that holds it (zip -r skill.zip skill)."
        )
    if tops:
        return tops[0], [(e.parts[1:], e) for e in entries]
    return None, [(e.parts, e) for e in entries]


def manifest(entries: list[_Entry], limits: SkillLimits) -> SkillManifest:
    """Check counts, sizes, names and SKILL.md; no file content but SKILL.md's is read."""
    if not entries:
        raise SkillArchiveError("The skill holds no files.")
    if len(entries) > limits.max_files:
        raise SkillArchiveError(f"The skill holds more than {limits.max_files} files.")
    _top, rel = _folder(entries)
    seen: set[str] = set()
    total = 0
    for parts, entry in rel:
        key = "/".join(parts)
        if key in seen:
            raise SkillArchiveError(f"File {key[:200]!r} appears twice.")
        seen.add(key)
        if entry.size > limits.max_file_bytes:
            raise SkillArchiveError(f"File {key[:200]!r} exceeds {limits.max_file_bytes} bytes.")
        total += entry.size
        if total > limits.max_total_bytes:
            raise SkillArchiveError(f"The skill exceeds {limits.max_total_bytes} bytes in total.")
    dirs = {"/".join(p[:i]) for p, _ in rel for i in range(1, len(p))}
    if clash := seen & dirs:
        raise SkillArchiveError(f"{sorted(clash)[0][:200]!r} is both a file and a folder.")
    skill_md = [e for p, e in rel if len(p) == 1 and p[0].lower() == "skill.md"]
    if not skill_md:
        raise SkillArchiveError("The skill folder needs a SKILL.md at its root.")
    if len(skill_md) > 1:
        raise SkillArchiveError("The skill folder holds more than one SKILL.md.")
    text = _read_capped(skill_md[0].open, MAX_SKILL_MD, "SKILL.md")
    try:
        name, description = parse_front_matter(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise SkillArchiveError("SKILL.md is not UTF-8.") from None
    files = tuple(
        ("SKILL.md" if len(p) == 1 and p[0].lower() == "skill.md" else "/".join(p), e.size)
        for p, e in rel
    )
    return SkillManifest(name, description, files)


def _read_capped(opener: Opener, cap: int, what: str) -> bytes:
    try:
        with opener() as f:
            data = f.read(cap + 1)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise SkillArchiveError(f"Cannot read {what}: {exc}.") from None
    if len(data) > cap:
        raise SkillArchiveError(f"{what} exceeds {cap} bytes.")
    return data


def repack(entries: list[_Entry], dst: Path, limits: SkillLimits) -> SkillManifest:
    """Validate, then write a normalised zip (`<name>/<path>`, regular files 0644) to dst."""
    found = manifest(entries, limits)
    _top, rel = _folder(entries)
    total = 0
    with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED) as out:
        for (parts, entry), (path, _size) in zip(rel, found.files, strict=True):
            info = zipfile.ZipInfo(f"{found.name}/{path}", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            written = 0
            try:
                with entry.open() as src, out.open(info, "w", force_zip64=True) as sink:
                    for chunk in _chunks(src):
                        written += len(chunk)
                        total += len(chunk)
                        if written > entry.size or written > limits.max_file_bytes:
                            raise SkillArchiveError(
                                f"File {'/'.join(parts)[:200]!r} is larger than it claims."
                            )
                        if total > limits.max_total_bytes:
                            raise SkillArchiveError(
                                f"The skill exceeds {limits.max_total_bytes} bytes in total."
                            )
                        sink.write(chunk)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise SkillArchiveError(f"Cannot read {'/'.join(parts)[:200]!r}: {exc}.") from None
    return found


def _chunks(src: IO[bytes]) -> Iterator[bytes]:
    while chunk := src.read(COPY_CHUNK):
        yield chunk


def repack_zip(src: Path, dst: Path, limits: SkillLimits) -> SkillManifest:
    zf, entries = zip_entries(src, limits)
    with zf:
        return repack(entries, dst, limits)


def repack_files(parts: list[tuple[str, Path]], dst: Path, limits: SkillLimits) -> SkillManifest:
    return repack(file_entries(parts), dst, limits)


def extract(stored: Path, dest: Path, limits: SkillLimits) -> SkillManifest:
    """Unpack a zip *we* wrote (re-validated anyway) into dest/<name>/: dirs 0755, files 0644.

    dest must be a fresh directory the sandbox can only read."""
    zf, entries = zip_entries(stored, limits)
    with zf:
        found = manifest(entries, limits)
        _top, rel = _folder(entries)
        root = dest / found.name
        root.mkdir()
        root.chmod(0o755)
        for (_parts, entry), (path, _size) in zip(rel, found.files, strict=True):
            target = root.joinpath(*PurePosixPath(path).parts)
            for parent in reversed(target.relative_to(dest).parents[:-1]):
                d = dest / parent
                if not d.exists():
                    d.mkdir()
                    d.chmod(0o755)
            written = 0
            with entry.open() as src, open(target, "xb") as sink:
                for chunk in _chunks(src):
                    written += len(chunk)
                    if written > entry.size:
                        raise SkillArchiveError(f"File {path!r} is larger than it claims.")
                    sink.write(chunk)
            target.chmod(0o644)
        return found
