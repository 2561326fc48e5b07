"""Records the daemon keeps about its objects (what the store persists)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    CREATING = "creating"  # record written, sandbox not confirmed yet (never listed)
    RUNNING = "running"
    EXPIRED = "expired"
    DELETING = "deleting"  # delete started; finished by the reconciler if we crash


@dataclass(frozen=True)
class ContainerRecord:
    id: str
    owner: str
    name: str
    created_at: int
    last_active_at: int
    status: Status
    memory_limit: str
    expires_minutes: int
    runtime: str
    status_reason: str | None = None
    # The public form of an allowlist policy (NetworkPolicy.public()); None = disabled.
    network_policy: dict[str, Any] | None = None
    image: str = "host"  # what it runs on (daemon/images.py)


@dataclass(frozen=True)
class SealedSecret:
    """A domain secret as stored: its value sealed with AES-GCM (daemon/secretbox.py)."""

    name: str
    domain: str
    placeholder: str
    sealed: bytes = field(repr=False)


@dataclass(frozen=True)
class FileRecord:
    id: str
    container_id: str
    path: str
    source: str  # "user" | "assistant"
    bytes: int
    created_at: int


@dataclass(frozen=True)
class UserFileRecord:
    """A file uploaded through /v1/files (its bytes live in a blob under the state dir)."""

    id: str
    owner: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    expires_at: int | None


@dataclass(frozen=True)
class SkillVersionRecord:
    """One immutable version of a skill (its normalised zip lives in a blob)."""

    id: str
    skill_id: str
    version: int
    created_at: int
    name: str
    description: str
    bytes: int


@dataclass(frozen=True)
class SkillRecord:
    id: str
    owner: str
    created_at: int
    default_version: int
    latest_version: int
    name: str  # the default version's
    description: str


@dataclass(frozen=True)
class EventRecord:
    created_at: int
    type: str  # created | oom_kill | pids_limit | expired | restarted_daemon | ...
    detail: dict[str, Any]


@dataclass(frozen=True)
class StoredResponse:
    """The first response to a request made with an `Idempotency-Key`."""

    fingerprint: str  # of the request: method, path and body
    status: int
    body: bytes  # JSON


@dataclass(frozen=True)
class Page[T]:
    items: list[T]
    has_more: bool
    truncated: bool = False  # container files: the workspace holds more than one listing sees
