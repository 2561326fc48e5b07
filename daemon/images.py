"""The images a create may name (`image`, our extension) and what `GET /v1/images` shows.

Images are host-wide, the same for every owner: the daemon's state dir holds what `sandboxd
image build RECIPE` made (sandbox/images.py), read fresh at each call (a build published while
the daemon runs is used by the next create), plus `host`, the host's own /usr.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.errors import InvalidRequest, NotFound
from sandbox import images

HOST_DESCRIPTION = "The host's own /usr, read-only: whatever the host has installed."


@dataclass(frozen=True)
class ImageInfo:
    name: str
    description: str
    build_id: str
    created_at: int
    size_bytes: int | None
    python_version: str | None
    node_version: str | None
    packages: Mapping[str, list[str]] = field(default_factory=dict)
    default: bool = False


def _version(argv: list[str]) -> str | None:
    """What `argv` prints of its version (host tools), without a leading 'v' or name."""
    if shutil.which(argv[0], path="/usr/bin:/bin") is None:
        return None
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=10, check=True, env={"PATH": "/usr/bin"}
        )
    except (OSError, subprocess.SubprocessError):
        return None
    words = (done.stdout or done.stderr).split()
    return words[-1].removeprefix("v") if words else None


def _info(built: images.BuiltImage, default: str) -> ImageInfo:
    meta: Mapping[str, Any] = built.meta
    packages = meta.get("packages")
    if isinstance(packages, list):  # an image of the older layout: Debian names only
        packages = {"debian": [str(p) for p in packages]}
    return ImageInfo(
        name=built.name,
        description=str(meta.get("description") or ""),
        build_id=built.build_id,
        created_at=int(meta.get("created_at") or meta.get("built_at") or 0),
        size_bytes=meta.get("size_bytes"),
        python_version=meta.get("python_version"),
        node_version=meta.get("node_version"),
        packages=packages if isinstance(packages, dict) else {},
        default=built.name == default,
    )


class ImageService:
    def __init__(self, state_dir: Path, default: str) -> None:
        self._state_dir = state_dir
        self.default = default
        self._host: ImageInfo | None = None

    async def list(self) -> list[ImageInfo]:
        built = await asyncio.to_thread(images.list_images, self._state_dir)
        return [await self._host_info(), *(_info(b, self.default) for b in built)]

    async def get(self, name: str) -> ImageInfo:
        if name == images.HOST:
            return await self._host_info()
        try:
            built = await asyncio.to_thread(images.load, self._state_dir, name)
        except images.ImageError:
            raise NotFound(f"No image found with name '{name}'.", param="image") from None
        return _info(built, self.default)

    async def resolve(self, name: str | None) -> str:
        """The image a create runs on: `name` (None: the default), checked to be usable."""
        wanted = self.default if name is None else name
        if wanted == images.HOST:
            return wanted
        if not await asyncio.to_thread(images.is_built, self._state_dir, wanted):
            names = ", ".join(i.name for i in await self.list())
            raise InvalidRequest(
                f"Unknown image '{wanted}': available images are {names} "
                f"(build one with: sandboxd image build RECIPE).",
                param="image",
            )
        return wanted

    async def _host_info(self) -> ImageInfo:
        if self._host is None:
            python, node = await asyncio.gather(
                asyncio.to_thread(_version, ["python3", "--version"]),
                asyncio.to_thread(_version, ["node", "--version"]),
            )
            self._host = ImageInfo(
                images.HOST,
                HOST_DESCRIPTION,
                build_id="host",
                created_at=0,
                size_bytes=None,
                python_version=python,
                node_version=node,
                default=self.default == images.HOST,
            )
        return self._host
