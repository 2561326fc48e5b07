"""Object ids in OpenAI's shapes."""

from __future__ import annotations

import re
import secrets


def container_id() -> str:
    return "cntr_" + secrets.token_hex(24)


def container_file_id() -> str:
    return "cfile_" + secrets.token_hex(16)


def request_id() -> str:
    return "req_" + secrets.token_hex(16)


CONTAINER_ID = re.compile(r"cntr_[0-9a-f]{48}")
CONTAINER_FILE_ID = re.compile(r"cfile_[0-9a-f]{32}")
