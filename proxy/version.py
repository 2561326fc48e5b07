"""The mitmproxy releases the proxy is written against, checked before mitmproxy is imported.

The proxy reaches into mitmproxy's internals (its layers, its hook points, the options it
sets), which change between major releases without notice; a proxy on another major release
could start and then enforce less than it should. So it refuses to start, with a clear error,
on a release outside the range pyproject.toml pins (a unit test holds the two equal).
"""

from __future__ import annotations

import re
from importlib import metadata

# pyproject.toml: "mitmproxy>=12,<13".
MITMPROXY_MIN = (12,)
MITMPROXY_BELOW = (13,)

_RELEASE = re.compile(r"\d+(?:\.\d+)*")


def release(version: str) -> tuple[int, ...] | None:
    """The release numbers a version string starts with ("12.1.2rc1" -> (12, 1, 2))."""
    match = _RELEASE.match(version)
    return tuple(int(part) for part in match.group().split(".")) if match else None


def check_mitmproxy(installed: str | None = None) -> str:
    """The installed mitmproxy's version (or `installed`); SystemExit when it is missing or
    outside MITMPROXY_MIN .. MITMPROXY_BELOW (exclusive)."""
    wanted = f">={_dotted(MITMPROXY_MIN)},<{_dotted(MITMPROXY_BELOW)}"
    if installed is None:
        try:
            installed = metadata.version("mitmproxy")
        except metadata.PackageNotFoundError:
            raise SystemExit(f"sandboxd-proxy: mitmproxy{wanted} is not installed") from None
    found = release(installed)
    # Compared as tuples: (12, 3, 1) >= (12,) and < (13,); 13.0.0 is not below (13,).
    if found is None or not MITMPROXY_MIN <= found < MITMPROXY_BELOW:
        raise SystemExit(
            f"sandboxd-proxy: mitmproxy {installed} is installed, but the proxy needs "
            f"mitmproxy{wanted} (reinstall sandboxd into its environment)"
        )
    return installed


def _dotted(numbers: tuple[int, ...]) -> str:
    return ".".join(str(n) for n in numbers)
