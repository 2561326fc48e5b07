"""`ls`, `create`, `rm`, `logs`, `top`: container commands that print tables or JSON."""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from sandboxd_client import APIError, NotFound

from daemon.clitool import output

if TYPE_CHECKING:  # the HTTP stack loads when dispatch makes the client
    from sandboxd_client import Client

FULL_ID = re.compile(r"cntr_[0-9a-f]{48}")
CLEAR = "\x1b[H\x1b[2J"


class CommandError(Exception):
    """A command cannot go on (a bad argument, an ambiguous name): its message, exit 1."""


@dataclass(frozen=True)
class Console:
    out: TextIO
    err: TextIO

    def error(self, message: str) -> None:
        self.err.write(f"sandboxd: {message}\n")
        self.err.flush()


def resolve(client: Client, ref: str) -> str:
    """A container id from an id, a unique id prefix or a unique name."""
    if FULL_ID.fullmatch(ref):
        return ref
    found = list(client.containers.list())
    for matches in (
        [c for c in found if ref in (c.id, c.name)],
        [c for c in found if c.id.startswith(ref)],
        [c for c in found if c.id.removeprefix("cntr_").startswith(ref)],
    ):
        if len(matches) == 1:
            return matches[0].id
        if len(matches) > 1:
            ids = ", ".join(c.id for c in matches[:5])
            raise CommandError(f"{ref!r} matches {len(matches)} containers ({ids}); use the id")
    raise NotFound(f"No container found with id or name {ref!r}.", status=404, request_id=None)


def _running(client: Client, include_expired: bool) -> list[dict[str, Any]]:
    """The containers' JSON objects, as the daemon sent them (what `--json` prints)."""
    found = client.containers.list()
    return [c.raw for c in found if include_expired or c.status == "running"]


def ls(client: Client, args: argparse.Namespace, con: Console) -> int:
    found = _running(client, args.all)
    if args.json:
        output.print_json(found, con.out)
        return 0
    now = time.time()
    rows = [
        [
            str(c.get("id", "")),
            str(c.get("name", "")),
            _status(c),
            str(c.get("memory_limit", "")),
            output.ago(c.get("created_at"), now),
            output.ago(c.get("last_active_at"), now),
        ]
        for c in found
    ]
    headers = ["ID", "NAME", "STATUS", "MEMORY", "CREATED", "LAST ACTIVE"]
    con.out.write(output.table(headers, rows))
    return 0


def _status(container: dict[str, Any]) -> str:
    status = str(container.get("status", ""))
    reason = container.get("status_reason")
    return f"{status} ({reason})" if status == "expired" and reason else status


def create(client: Client, args: argparse.Namespace, con: Console) -> int:
    created = client.containers.create(
        args.name, memory_limit=args.memory, expires_after_minutes=args.minutes, image=args.image
    )
    if args.json:
        output.print_json(created.raw, con.out)
    else:
        con.out.write(f"{created.id}\n")
    return 0


def rm(client: Client, args: argparse.Namespace, con: Console) -> int:
    if not args.ids and not args.expired:
        con.error("rm: name at least one container, or pass --expired")
        return 2
    targets: list[str] = []
    failed = False
    for ref in args.ids:
        try:
            targets.append(resolve(client, ref))
        except APIError as exc:
            con.error(f"{ref}: {exc.message}")
            failed = True
    if args.expired:
        targets += [c.id for c in client.containers.list() if c.status == "expired"]
    for cid in dict.fromkeys(targets):
        try:
            client.containers.delete(cid)
        except APIError as exc:
            con.error(f"{cid}: {exc.message}")
            failed = True
        else:
            con.out.write(f"{cid}\n")
    return 1 if failed else 0


def logs(client: Client, args: argparse.Namespace, con: Console) -> int:
    cid = resolve(client, args.id)
    events = [e.raw for e in client.containers.events(cid)]
    if args.json:
        output.print_json(events, con.out)
        return 0
    rows = [
        [output.clock(e.get("created_at")), str(e.get("type", "")), output.detail(e.get("detail"))]
        for e in events
    ]
    con.out.write(output.table(["TIME", "TYPE", "DETAIL"], rows))
    return 0


def top_table(containers: list[dict[str, Any]], now: float) -> str:
    busy = sorted(containers, key=lambda c: -int(c.get("last_active_at") or 0))
    rows = [
        [
            str(c.get("id", "")),
            str(c.get("name", "")),
            str(c.get("memory_limit", "")),
            output.duration(now - (c.get("created_at") or now)),
            output.ago(c.get("last_active_at"), now),
            output.duration((c.get("expires_at") or now) - now),
        ]
        for c in busy
    ]
    headers = ["ID", "NAME", "MEMORY LIMIT", "AGE", "LAST ACTIVE", "EXPIRES IN"]
    return output.table(headers, rows)


def top(client: Client, args: argparse.Namespace, con: Console) -> int:
    """Running containers by last activity; listing does not count as activity."""
    tty = con.out.isatty() and not args.once
    try:
        while True:
            found = _running(client, False)
            now = time.time()
            if args.json:
                output.print_json(found, con.out)
            else:
                clock = time.strftime("%H:%M:%S", time.localtime(now))
                head = f"sandboxd top - {len(found)} running - {clock}"
                if not args.once:
                    head += f" - every {args.interval:g}s, Ctrl-C quits"
                con.out.write((CLEAR if tty else "") + head + "\n\n" + top_table(found, now))
            con.out.flush()
            if args.once:
                return 0
            time.sleep(args.interval)
            if not tty:
                con.out.write("\n")
    except KeyboardInterrupt:
        return 0
