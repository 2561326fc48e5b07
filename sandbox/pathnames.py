"""File names as the API shows them: every byte of a name kept, in valid UTF-8.

A Linux file name is bytes; most are UTF-8, some are not (`open(b'evil\\xff.txt', 'w')`).
Python hands those around with lone surrogates (`surrogateescape`), which neither JSON
consumers nor SQLite accept. The API form is the name as UTF-8 with two escapes: a byte that
is not part of valid UTF-8 is written `%XX` (upper-case hex), and a `%` that is followed by two
hex digits is written `%25`. Every other character, `%` included, stands for itself, so
ordinary names (`50% off.pdf`) look as they are. The mapping is one-to-one: `raw()` gives back
the exact bytes, and a name with no `%XX` in it is shown unchanged.
"""

from __future__ import annotations

HEX = frozenset("0123456789abcdefABCDEF")


def _hex2(text: str, i: int) -> bool:
    return i + 2 < len(text) and text[i + 1] in HEX and text[i + 2] in HEX


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def to_api(name: str) -> str:
    """The API form of a name as Python's OS functions give it (surrogate-escaped)."""
    if "%" not in name and _is_utf8(name):
        return name  # the common case, at C speed
    out = []
    for i, ch in enumerate(name):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"%{code - 0xDC00:02X}")
        elif 0xD800 <= code <= 0xDFFF:
            raise ValueError("not a surrogate-escaped file name")
        elif ch == "%" and _hex2(name, i):
            out.append("%25")
        else:
            out.append(ch)
    return "".join(out)


def raw(api_name: str) -> bytes:
    """The bytes an API-form name stands for."""
    if "%" not in api_name:
        return api_name.encode("utf-8")
    out = bytearray()
    i = 0
    while i < len(api_name):
        ch = api_name[i]
        if ch == "%" and _hex2(api_name, i):
            out.append(int(api_name[i + 1 : i + 3], 16))
            i += 3
            continue
        out += ch.encode("utf-8")
        i += 1
    return bytes(out)


def from_api(api_name: str) -> str:
    """The name as Python's OS functions take it (surrogate-escaped): the inverse of to_api."""
    return raw(api_name).decode("utf-8", "surrogateescape")
