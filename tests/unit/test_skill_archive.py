"""The skill archive validator: good zips and directories pass, every hostile shape is refused
with a reason."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from sandbox.skill_archive import (
    SkillArchiveError,
    SkillLimits,
    extract,
    parse_front_matter,
    repack_files,
    repack_zip,
)

SKILL_MD = b"---\nname: csv-tools\ndescription: Read and summarise CSV files.\n---\n# Use me\n"
LIMITS = SkillLimits()


def _zip(path: Path, entries: dict[str, bytes], **kw: object) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def _special(path: Path, name: str, mode: int, data: bytes = b"x") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("s/SKILL.md", SKILL_MD)
        info = zipfile.ZipInfo(name)
        info.create_system = 3
        info.external_attr = mode << 16
        zf.writestr(info, data)
    return path


def test_good_zip_is_repacked_under_the_skill_name(tmp_path: Path) -> None:
    src = _zip(
        tmp_path / "in.zip",
        {"my-folder/SKILL.md": SKILL_MD, "my-folder/scripts/run.py": b"print(1)\n"},
    )
    found = repack_zip(src, tmp_path / "out.zip", LIMITS)
    assert (found.name, found.description) == ("csv-tools", "Read and summarise CSV files.")
    assert sorted(found.files) == [("SKILL.md", len(SKILL_MD)), ("scripts/run.py", 9)]
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        assert sorted(zf.namelist()) == ["csv-tools/SKILL.md", "csv-tools/scripts/run.py"]
    dest = tmp_path / "mnt"
    dest.mkdir()
    extract(tmp_path / "out.zip", dest, LIMITS)
    run = dest / "csv-tools" / "scripts" / "run.py"
    assert run.read_bytes() == b"print(1)\n"
    assert stat.S_IMODE(run.stat().st_mode) == 0o644
    assert stat.S_IMODE((dest / "csv-tools" / "scripts").stat().st_mode) == 0o755


def test_good_directory_upload_with_and_without_a_folder(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(SKILL_MD)
    b.write_bytes(b"data")
    found = repack_files([("dir/SKILL.md", a), ("dir/x/data.txt", b)], tmp_path / "1.zip", LIMITS)
    assert dict(found.files) == {"SKILL.md": len(SKILL_MD), "x/data.txt": 4}
    flat = repack_files([("skill.md", a), ("data.txt", b)], tmp_path / "2.zip", LIMITS)
    assert flat.name == "csv-tools" and dict(flat.files)["SKILL.md"] == len(SKILL_MD)


def test_skill_md_at_the_zip_root_with_sub_folders(tmp_path: Path) -> None:
    """`cd skill && zip -r ../s.zip .`: the zip's top level is the skill folder."""
    src = _zip(
        tmp_path / "in.zip",
        {"SKILL.md": SKILL_MD, "scripts/run.py": b"print(1)", "docs/a/b.md": b"b", "x": b"x"},
    )
    found = repack_zip(src, tmp_path / "out.zip", LIMITS)
    assert dict(found.files) == {"SKILL.md": len(SKILL_MD), "scripts/run.py": 8,
                                 "docs/a/b.md": 1, "x": 1}  # fmt: skip
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        assert sorted(zf.namelist()) == [
            "csv-tools/SKILL.md", "csv-tools/docs/a/b.md", "csv-tools/scripts/run.py",
            "csv-tools/x",
        ]  # fmt: skip
    # the same as a directory upload (`files[]` parts with paths relative to the skill)
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(SKILL_MD)
    b.write_bytes(b"data")
    flat = repack_files([("SKILL.md", a), ("sub/data.txt", b)], tmp_path / "2.zip", LIMITS)
    assert dict(flat.files) == {"SKILL.md": len(SKILL_MD), "sub/data.txt": 4}


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        ({"s/readme.txt": b"x"}, "needs a SKILL.md"),
        ({"s/SKILL.md": SKILL_MD, "s/skill.md": SKILL_MD}, "more than one SKILL.md"),
        ({"s/sub/SKILL.md": SKILL_MD}, "needs a SKILL.md"),
        ({"s/SKILL.md": b"# no front matter\n"}, "front matter"),
        ({"s/SKILL.md": b"---\nname: x\n"}, "not closed"),
        ({"s/SKILL.md": b"---\ndescription: d\n---\n"}, "needs a 'name'"),
        ({"s/SKILL.md": b"---\nname: Bad_Name\ndescription: d\n---\n"}, "Invalid skill name"),
        ({"s/SKILL.md": b"---\nname: a--b\ndescription: d\n---\n"}, "Invalid skill name"),
        ({"s/SKILL.md": b"---\nname: -ab\ndescription: d\n---\n"}, "Invalid skill name"),
        ({"s/SKILL.md": b"---\nname: ab\n---\n"}, "needs a 'description'"),
        ({"s/SKILL.md": b"---\nname: ab\ndescription: " + b"d" * 1025 + b"\n---\n"}, "longer"),
        ({"s/SKILL.md": SKILL_MD, "s/../x": b"x"}, "leaves the skill folder"),
        ({"s/SKILL.md": SKILL_MD, "/etc/passwd": b"x"}, "Absolute path"),
        ({"s/SKILL.md": SKILL_MD, "s\\..\\x": b"x"}, "backslash"),
        (
            {"s/SKILL.md": SKILL_MD, "t/x": b"x"},
            r"several top-level entries \('s', 't'\) and no SKILL.md.*zip -r",
        ),
        ({"s/SKILL.md": SKILL_MD, "x": b"x"}, "several top-level entries"),
        ({}, "no files"),
    ],
)
def test_bad_zips_are_refused(tmp_path: Path, entries: dict[str, bytes], reason: str) -> None:
    src = _zip(tmp_path / "in.zip", entries)
    with pytest.raises(SkillArchiveError, match=reason):
        repack_zip(src, tmp_path / "out.zip", LIMITS)


def test_symlink_entry_is_refused(tmp_path: Path) -> None:
    src = _special(tmp_path / "in.zip", "s/link", stat.S_IFLNK | 0o777, b"/etc/shadow")
    with pytest.raises(SkillArchiveError, match="symlink"):
        repack_zip(src, tmp_path / "out.zip", LIMITS)


@pytest.mark.parametrize("kind", [stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK])
def test_device_entries_are_refused(tmp_path: Path, kind: int) -> None:
    src = _special(tmp_path / "in.zip", "s/dev", kind | 0o644)
    with pytest.raises(SkillArchiveError, match="device or special file"):
        repack_zip(src, tmp_path / "out.zip", LIMITS)


def test_too_many_files(tmp_path: Path) -> None:
    entries = {"s/SKILL.md": SKILL_MD} | {f"s/f{i}": b"x" for i in range(10)}
    src = _zip(tmp_path / "in.zip", entries)
    with pytest.raises(SkillArchiveError, match="more than 5 files"):
        repack_zip(src, tmp_path / "out.zip", SkillLimits(max_files=5))


def test_too_big(tmp_path: Path) -> None:
    src = _zip(tmp_path / "in.zip", {"s/SKILL.md": SKILL_MD, "s/big": b"a" * 5000})
    with pytest.raises(SkillArchiveError, match="exceeds 4096 bytes"):
        repack_zip(src, tmp_path / "out.zip", SkillLimits(max_file_bytes=4096))
    with pytest.raises(SkillArchiveError, match="in total"):
        repack_zip(src, tmp_path / "out.zip", SkillLimits(max_total_bytes=4096))
    with pytest.raises(SkillArchiveError, match="The zip exceeds"):
        repack_zip(src, tmp_path / "out.zip", SkillLimits(max_zip_bytes=100))


def test_zip_bomb_ratio(tmp_path: Path) -> None:
    src = _zip(tmp_path / "in.zip", {"s/SKILL.md": SKILL_MD, "s/zeros": bytes(8 << 20)})
    with pytest.raises(SkillArchiveError, match="zip bomb"):
        repack_zip(src, tmp_path / "out.zip", LIMITS)


def test_not_a_zip(tmp_path: Path) -> None:
    src = tmp_path / "in.zip"
    src.write_bytes(b"plain text")
    with pytest.raises(SkillArchiveError, match="Not a valid zip"):
        repack_zip(src, tmp_path / "out.zip", LIMITS)


def test_directory_upload_paths_are_checked(tmp_path: Path) -> None:
    md = tmp_path / "md"
    md.write_bytes(SKILL_MD)
    for bad, reason in (("../SKILL.md", "leaves"), ("/abs/SKILL.md", "Absolute")):
        with pytest.raises(SkillArchiveError, match=reason):
            repack_files([(bad, md)], tmp_path / "o.zip", LIMITS)
    with pytest.raises(SkillArchiveError, match="appears twice"):
        repack_files([("d/SKILL.md", md), ("d/./SKILL.md", md)], tmp_path / "o.zip", LIMITS)


def test_front_matter_subset() -> None:
    text = "---\nname: 'pdf-kit'\ndescription: >\n  Makes PDFs\n  from text.\nlicense: MIT\n---\n"
    assert parse_front_matter(text) == ("pdf-kit", "Makes PDFs from text.")
    assert parse_front_matter('---\nname: a1\ndescription: "x: y" # c\n---\n') == ("a1", "x: y")
