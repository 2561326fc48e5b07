"""`exec -d`, `ps`, `output`, `kill`: a container's background processes (the API's
/processes). They outlive the command line that started them; their output is read later,
from any byte offset the daemon's ring still holds."""

from __future__ import annotations

import argparse
import re
import signal
import time
from typing import TYPE_CHECKING

from sandboxd_client import NotFound, OutputStart, Process, ProcessChunk

from daemon.clitool import output, run
from daemon.clitool.containers import CommandError, Console, resolve

if TYPE_CHECKING:  # the HTTP stack loads when dispatch makes the client
    from sandboxd_client import Client

FULL_ID = re.compile(r"proc_[0-9a-f]{32}")
FOREGROUND_ONLY = (("--timeout", "timeout"), ("--max-output", "max_output"), ("-i", "stdin"))
FORGET_HINT = (
    "kill only signals: the process stays listed, with its output, until the container goes "
    "or a new process needs its slot (the oldest ended one is forgotten first). To forget it "
    "now (SIGKILL to its whole group, output gone), delete it through the API: "
    "DELETE /v1/containers/ID/processes/PID, or Client().processes.delete(ID, PID)."
)


def start(client: Client, args: argparse.Namespace, con: Console) -> int:
    """`exec -d`: start the command in the background and print its process id."""
    if not args.argv:
        con.error("exec: give a command after the container, e.g. exec -d ID -- sleep 60")
        return 2
    given = [flag for flag, name in FOREGROUND_ONLY if getattr(args, name)]
    if given:
        # A background process has no deadline or output cap, and no stdin to send at start
        # (the API's input route feeds it later).
        con.error(f"exec -d: {', '.join(given)} only apply to a foreground exec")
        return 2
    env = dict(run.env_pair(item) for item in args.env) if args.env else None
    cid = resolve(client, args.id)
    started = client.processes.start(
        cid,
        run.command_line(args.argv, args.sh),
        env=env,
        working_directory=args.workdir or None,
    )
    con.out.write(f"{started.id}\n")
    return 0


def resolve_process(client: Client, cid: str, ref: str) -> str:
    """A process id from an id or a unique id prefix (with or without `proc_`)."""
    if FULL_ID.fullmatch(ref):
        return ref
    found = [p.id for p in client.processes.list(cid)]
    for matches in (
        [p for p in found if p.startswith(ref)],
        [p for p in found if p.removeprefix("proc_").startswith(ref)],
    ):
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            ids = ", ".join(matches[:5])
            raise CommandError(f"{ref!r} matches {len(matches)} processes ({ids}); use the id")
    raise NotFound(f"No process found with id {ref!r} in {cid}.", status=404, request_id=None)


def ps(client: Client, args: argparse.Namespace, con: Console) -> int:
    cid = resolve(client, args.id)
    found = list(client.processes.list(cid))
    if args.json:
        output.print_json([p.raw for p in found], con.out)
        return 0
    now = time.time()
    rows = [
        [p.id, status(p), output.ago(p.created_at, now), size(p.output_bytes), p.command]
        for p in found
    ]
    con.out.write(output.table(["ID", "STATUS", "STARTED", "OUTPUT", "COMMAND"], rows))
    return 0


def status(process: Process) -> str:
    """running, or `exited N` (and what killed it, when the daemon saw that)."""
    if process.running:
        return "running"
    text = f"exited {process.exit_code}" if process.exit_code is not None else "exited"
    return f"{text} ({process.killed})" if process.killed else text


def size(count: int) -> str:
    for unit, scale in (("M", 1 << 20), ("K", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}"
    return f"{count}B"


def show_output(client: Client, args: argparse.Namespace, con: Console) -> int:
    """`output`: what the process wrote, stdout to ours and stderr to ours; `-f` follows it
    until it ends (reconnecting from the last offset if the connection drops)."""
    cid = resolve(client, args.id)
    pid = resolve_process(client, cid, args.pid)
    if args.follow:
        for event in client.processes.follow(cid, pid, offset=args.offset):
            if isinstance(event, ProcessChunk):
                run.emit(con.out if event.type == "stdout" else con.err, event.data)
            elif isinstance(event, OutputStart) and event.dropped:
                _dropped(event.dropped, event.offset, con)
        return 0
    offset = args.offset
    end: int | None = None
    while True:
        read = client.processes.read(cid, pid, offset=offset)
        if read.dropped:
            _dropped(read.dropped, read.offset, con)
        for item in read.output:
            run.emit(con.out if item.stream == "stdout" else con.err, item.data)
        # Up to what the process had written at the first read: a chatty one cannot keep
        # us reading forever (`-f` is for that).
        end = read.process.output_bytes if end is None else end
        if read.next_offset >= end or read.next_offset <= offset:
            return 0
        offset = read.next_offset


def _dropped(count: int, offset: int, con: Console) -> None:
    con.error(f"{count} bytes of output were no longer kept; it goes on from byte {offset}")


def signal_name(value: str) -> str:
    """A signal by name (TERM, SIGTERM, term) or number (15), as the API names it."""
    if value.isdigit():
        try:
            return signal.Signals(int(value)).name.removeprefix("SIG")
        except ValueError:
            raise CommandError(f"no signal number {value}") from None
    return value.upper().removeprefix("SIG")


def kill(client: Client, args: argparse.Namespace, con: Console) -> int:
    cid = resolve(client, args.id)
    pid = resolve_process(client, cid, args.pid)
    signalled = client.processes.signal(cid, pid, signal_name(args.signal))
    if args.json:
        output.print_json(signalled.raw, con.out)
    else:
        con.out.write(f"{signalled.id}\n")
    return 0
