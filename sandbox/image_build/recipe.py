"""Image recipes: declarative TOML files (config/images/<name>.toml) saying what a build has.

    description = "one line"
    suite = "bookworm"                  # Debian suite (default bookworm)
    snapshot = "20250520T000000Z"       # optional: build from snapshot.debian.org at that time
    [debian]  packages = [...]          # installed with apt (the real resolver), no recommends
    [python]  packages = [...]          # optional: wheels into the venv /opt/venv (see stages)
    [npm]     packages = [...]          # optional: installed globally with the image's npm
    [env]     NAME = "value"            # put into every sandbox process's environment
    [verify]  imports = [...]           # checked in the finished tree; a failure fails the
              commands = [...]          # build (sh -c strings, as the sandbox user, no network)

Unknown keys and wrong types are refused with the key's name, so a typo never builds an
image that silently lacks something.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox import images
from sandbox.images import ImageError

DEFAULT_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SNAPSHOT_MIRROR = "http://snapshot.debian.org/archive/debian/{snapshot}"
# The recipes shipped with sandboxd, beside the sources (scripts/install copies the tree).
SHIPPED = Path(__file__).resolve().parents[2] / "config" / "images"
# Where an administrator's own recipes go; they win over shipped ones of the same name.
LOCAL = Path("/etc/sandboxd/images")
SNAPSHOT = re.compile(r"\d{8}T\d{6}Z")
DEBIAN_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
# A requirement pip accepts (name, extras, a version specifier); no URLs, paths or options.
PYTHON_PACKAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?\s*([<>=!~][^;#]*)?")
NPM_PACKAGE = re.compile(r"(@[a-z0-9][a-z0-9._-]*/)?[a-z0-9][a-z0-9._-]*(@[A-Za-z0-9.^~<>=*|-]+)?")


class RecipeError(ImageError):
    """A recipe that cannot be read or is malformed (the message names the key)."""


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str = ""
    suite: str = DEFAULT_SUITE
    snapshot: str = ""
    debian: Sequence[str] = ()
    python: Sequence[str] = ()
    npm: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    verify_imports: Sequence[str] = ()
    verify_commands: Sequence[str] = ()

    def mirror(self, default: str) -> str:
        """The Debian mirror to build from: the snapshot's when the recipe pins one."""
        return SNAPSHOT_MIRROR.format(snapshot=self.snapshot) if self.snapshot else default

    def digest(self, *, layout_version: str, mirror: str) -> str:
        """sha256 of everything that decides what a build contains (package lists sorted:
        apt and pip do not care about their order)."""
        canonical = {
            "layout_version": layout_version,
            "suite": self.suite,
            "snapshot": self.snapshot,
            "mirror": self.mirror(mirror),
            "debian": sorted(self.debian),
            "python": sorted(self.python),
            "npm": sorted(self.npm),
            "env": dict(sorted(self.env.items())),
            "verify": {
                "imports": list(self.verify_imports),
                "commands": list(self.verify_commands),
            },
        }
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def host_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror the host's apt uses (one-line or deb822 sources), or the default."""
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for match in re.finditer(r"(?m)^(?:deb\s+(?:\[[^]]*\]\s+)?|URIs:\s*)(\S+)", text):
            uri = match.group(1).rstrip("/")
            if uri.startswith(("http://", "https://")) and not uri.endswith("-security"):
                return uri
    return DEFAULT_MIRROR


def find(spec: str, search: Sequence[Path] = (LOCAL, SHIPPED)) -> Path:
    """A recipe argument: a path to a .toml file, or a name looked up in `search`."""
    if spec.endswith(".toml") or "/" in spec:
        path = Path(spec)
        if not path.is_file():
            raise RecipeError(f"recipe file {spec} not found")
        return path
    for directory in search:
        path = directory / f"{spec}.toml"
        if path.is_file():
            return path
    known = sorted({p.stem for d in search if d.is_dir() for p in d.glob("*.toml")})
    raise RecipeError(f"no recipe {spec!r} (known: {', '.join(known) or 'none'})")


def available(search: Sequence[Path] = (LOCAL, SHIPPED)) -> list[str]:
    return sorted({p.stem for d in search if d.is_dir() for p in d.glob("*.toml")})


def load(path: Path) -> Recipe:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise RecipeError(f"recipe {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"recipe {path}: not valid TOML: {exc}") from exc
    return parse(path.stem, data, where=str(path))


def parse(name: str, data: Mapping[str, Any], *, where: str = "recipe") -> Recipe:
    tables = {"debian", "python", "npm", "env", "verify"}
    _known(data, {"description", "suite", "snapshot"} | tables, where)
    for table in tables:
        if table in data and not isinstance(data[table], dict):
            raise RecipeError(f"{where}: [{table}] must be a table")
    for table in ("debian", "python", "npm"):
        _known(data.get(table, {}), {"packages"}, f"{where} [{table}]")
    _known(data.get("verify", {}), {"imports", "commands"}, f"{where} [verify]")
    suite = _string(data, "suite", where, DEFAULT_SUITE)
    if not re.fullmatch(r"[a-z][a-z0-9-]*", suite):
        raise RecipeError(f"{where}: suite {suite!r} is not a Debian suite name")
    snapshot = _string(data, "snapshot", where, "")
    if snapshot and not SNAPSHOT.fullmatch(snapshot):
        raise RecipeError(f"{where}: snapshot {snapshot!r} is not like 20250520T000000Z")
    debian = _packages(data, "debian", DEBIAN_PACKAGE, where)
    if not debian:
        raise RecipeError(f"{where}: [debian] packages is required (python3 at least)")
    env = data.get("env", {})
    problem = images.env_problem(env)
    if problem is not None:
        raise RecipeError(f"{where} [env]: {problem}")
    verify = data.get("verify", {})
    imports = _strings(verify, "imports", f"{where} [verify]")
    for module in imports:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", module):
            raise RecipeError(f"{where} [verify]: {module!r} is not a module name")
    return Recipe(
        name=name,
        description=_string(data, "description", where, ""),
        suite=suite,
        snapshot=snapshot,
        debian=debian,
        python=_packages(data, "python", PYTHON_PACKAGE, where),
        npm=_packages(data, "npm", NPM_PACKAGE, where),
        env=dict(env),
        verify_imports=imports,
        verify_commands=_strings(verify, "commands", f"{where} [verify]"),
    )


def _known(table: Mapping[str, Any], keys: set[str], where: str) -> None:
    unknown = sorted(set(table) - keys)
    if unknown:
        raise RecipeError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(keys))})")


def _string(table: Mapping[str, Any], key: str, where: str, default: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise RecipeError(f"{where}: {key} must be a string")
    return value


def _strings(table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RecipeError(f"{where}: {key} must be a list of non-empty strings")
    return tuple(value)


def _packages(
    data: Mapping[str, Any], table: str, pattern: re.Pattern[str], where: str
) -> tuple[str, ...]:
    names = _strings(data.get(table, {}), "packages", f"{where} [{table}]")
    for name in names:
        if not pattern.fullmatch(name):
            raise RecipeError(f"{where} [{table}]: {name!r} is not a package name")
    if len(set(names)) != len(names):
        raise RecipeError(f"{where} [{table}]: a package is listed twice")
    return names
