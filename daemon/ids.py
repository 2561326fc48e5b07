"""Object ids in OpenAI's shapes."""

from __future__ import annotations

import re
import secrets
import string


def container_id() -> str:
    return "cntr_" + secrets.token_hex(24)


def container_file_id() -> str:
    return "cfile_" + secrets.token_hex(16)


_ALNUM = string.ascii_letters + string.digits


def user_file_id() -> str:
    return "file-" + "".join(secrets.choice(_ALNUM) for _ in range(24))


def skill_id() -> str:
    return "skill_" + secrets.token_hex(16)


def skill_version_id() -> str:
    return "skillver_" + secrets.token_hex(16)


def request_id() -> str:
    return "req_" + secrets.token_hex(16)


CONTAINER_ID = re.compile(r"cntr_[0-9a-f]{48}")
CONTAINER_FILE_ID = re.compile(r"cfile_[0-9a-f]{32}")
USER_FILE_ID = re.compile(r"file-[A-Za-z0-9]{1,64}")
SKILL_ID = re.compile(r"skill_[0-9a-f]{32}")
SKILL_VERSION_ID = re.compile(r"skillver_[0-9a-f]{32}")
