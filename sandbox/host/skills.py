"""Skills on the host side of a sandbox: a per-sandbox directory bound read-only at
/mnt/skills, filled after the sandbox started (so pre-started sandboxes work too).

The sandbox can only read the directory; the daemon writes it as root. What goes in comes
from zips the daemon validated and normalised, and is re-checked while extracting."""

from __future__ import annotations

import json
import os
from pathlib import Path

from sandbox.skill_archive import SkillLimits, extract
from sandbox.spec import SKILLS_DIR, SkillFiles

INDEX = "index.json"
# The zips were checked against the configured limits at upload; extraction re-checks paths
# and entry types (what keeps the host safe), not sizes the operator may have raised.
EXTRACT_LIMITS = SkillLimits(
    max_zip_bytes=1 << 40,
    max_files=1 << 20,
    max_file_bytes=1 << 40,
    max_total_bytes=1 << 40,
    max_ratio=1 << 30,
)


def make_dir(path: Path) -> None:
    path.mkdir(exist_ok=True)
    path.chmod(0o755)


def install(dest: Path, skills: list[SkillFiles]) -> None:
    """Extract each skill to dest/<name>/ (dirs 0755, files 0644) and write dest/index.json."""
    index = []
    for skill in skills:
        found = extract(skill.zip_path, dest, EXTRACT_LIMITS)
        index.append(
            {
                "name": found.name,
                "description": found.description,
                "path": f"{SKILLS_DIR}/{found.name}",
            }
        )
    tmp = dest / f".{INDEX}.tmp"
    with open(tmp, "x", encoding="utf-8") as f:
        json.dump({"skills": index}, f, indent=2)
        f.write("\n")
    tmp.chmod(0o644)
    os.rename(tmp, dest / INDEX)
