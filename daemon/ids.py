"""Object ids in OpenAI's shapes, time-ordered.

Like OpenAI's own ids (`cntr_682e3064…` was made at 0x682e3064 = 1747857508), ours begin with
the creation time: 8 hex digits of Unix seconds, then 8 of the fraction of the second (units
of 2**-32 s), then random digits. Lists are ordered by that time key, so a list cursor that
names a deleted object still has a place: `after=<deleted id>` continues where it stood, and a
well-formed id that never existed is placed by its time. The shapes are the ones we always had
(`cntr_` + 48 hex, `cfile_`/`skill_`/`skillver_` + 32 hex, `file-` + alphanumerics), so ids
made before (random hex) still parse; those keep their place through the store.
"""

from __future__ import annotations

import re
import secrets
import string
import time

_ALNUM = string.ascii_letters + string.digits
_NS = 1_000_000_000


def time_key() -> str:
    """16 hex digits that sort like the current time (seconds, then the fraction)."""
    seconds, frac = divmod(time.time_ns(), _NS)
    return f"{seconds:08x}{(frac << 32) // _NS:08x}"


def container_id() -> str:
    return "cntr_" + time_key() + secrets.token_hex(16)


def container_file_id() -> str:
    return "cfile_" + time_key() + secrets.token_hex(8)


def user_file_id() -> str:
    return "file-" + time_key() + "".join(secrets.choice(_ALNUM) for _ in range(16))


def skill_id() -> str:
    return "skill_" + time_key() + secrets.token_hex(8)


def skill_version_id() -> str:
    return "skillver_" + time_key() + secrets.token_hex(8)


def process_id() -> str:
    """A background process's id: the agent keeps it (lowercase, digits and "_" only)."""
    return "proc_" + time_key() + secrets.token_hex(8)


def request_id() -> str:
    return "req_" + secrets.token_hex(16)


CONTAINER_ID = re.compile(r"cntr_[0-9a-f]{48}")
CONTAINER_FILE_ID = re.compile(r"cfile_[0-9a-f]{32}")
USER_FILE_ID = re.compile(r"file-[A-Za-z0-9]{1,64}")
SKILL_ID = re.compile(r"skill_[0-9a-f]{32}")
SKILL_VERSION_ID = re.compile(r"skillver_[0-9a-f]{32}")
PROCESS_ID = re.compile(r"proc_[0-9a-f]{32}")

_TIME_ORDERED = re.compile(
    r"(?:cntr_|cfile_|skill_|skillver_)([0-9a-f]{16})[0-9a-f]+|file-([0-9a-f]{16})[A-Za-z0-9]{16}"
)


def sort_key(object_id: str) -> str | None:
    """Where an id stands in its list (its time key, then the id itself to break ties), or
    None for an id without a time key (a file id made before ids were time-ordered)."""
    m = _TIME_ORDERED.fullmatch(object_id)
    if m is None:
        return None
    return (m.group(1) or m.group(2)) + object_id
