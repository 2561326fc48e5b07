"""`exec` (streamed as it happens) and `cp` (upload to / download from /mnt/data)."""

from __future__ import annotations

import argparse
import os
import posixpath
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

from sandboxd_client import CommandFinished, ExecDone, NotFound, OutputChunk, StreamEnded

from daemon.clitool import output
from daemon.clitool.containers import CommandError, Console, resolve

if TYPE_CHECKING:  # the HTTP stack loads when dispatch makes the client
    from sandboxd_client import Client

EX_TIMEOUT = 124  # as timeout(1)
EX_KILLED = 137  # 128 + SIGKILL, as a shell reports it
WORKSPACE = "/mnt/data"
REMOTE = re.compile(r"([^/:]+):(.*)", re.DOTALL)
KILLED = {
    "oom": "out of memory (the container's memory limit)",
    "pids": "too many processes (the container's pids limit)",
    "shutdown": "the daemon shut down",
}


def emit(stream: TextIO, text: str) -> None:
    """Write as it arrives; bytes where possible so a C locale cannot choke on UTF-8."""
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        stream.flush()
        buffer.write(text.encode("utf-8", "replace"))
        buffer.flush()
    else:
        stream.write(text)
        stream.flush()


def command_line(argv: list[str], shell: bool) -> str:
    return " ".join(argv) if shell else shlex.join(argv)


def exit_status(event: Mapping[str, Any], con: Console) -> int:
    """The process exit code for a command's `outcome` event (messages go to stderr)."""
    outcome = event.get("outcome") or {}
    if event.get("truncated"):
        con.error("output was truncated (see --max-output)")
    if outcome.get("type") == "timeout":
        con.error("command timed out")
        return EX_TIMEOUT
    killed = event.get("killed")
    if killed:
        con.error(f"command killed: {KILLED.get(str(killed), str(killed))}")
        return EX_KILLED
    code = outcome.get("exit_code")
    if not isinstance(code, int):
        raise CommandError("the daemon sent an outcome without an exit code")
    return 128 - code if code < 0 else min(code, 255)


def exec_(client: Client, args: argparse.Namespace, con: Console, stdin: BinaryIO) -> int:
    if not args.argv:
        con.error("exec: give a command after the container, e.g. exec ID -- ls -l")
        return 2
    timeout_ms = None if args.timeout is None else max(1, round(args.timeout * 1000))
    env = dict(env_pair(item) for item in args.env) if args.env else None
    stdin_text = None
    if args.stdin:
        try:
            stdin_text = stdin.read().decode("utf-8")
        except UnicodeDecodeError:
            raise CommandError("stdin must be UTF-8 text") from None
    cid = resolve(client, args.id)
    status: int | None = None
    events = client.exec_stream(
        cid,
        [command_line(args.argv, args.sh)],
        timeout_ms=timeout_ms,
        max_output_length=args.max_output,
        env=env,
        working_directory=args.workdir or None,
        stdin=stdin_text,
    )
    try:
        for event in events:
            if isinstance(event, OutputChunk):
                emit(con.out if event.type == "stdout" else con.err, event.data)
            elif isinstance(event, CommandFinished):
                status = exit_status(event.raw, con)
            elif isinstance(event, ExecDone):
                break
    except StreamEnded:
        pass  # what the command's outcome said, if it came, stands
    finally:
        events.close()  # the connection goes now, not when the generator is collected
    if status is None:
        raise CommandError("the exec stream ended before the command finished")
    return status


def env_pair(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise CommandError(f"--env wants KEY=VALUE, got {item!r}")
    return key, value


def split_remote(spec: str) -> tuple[str, str] | None:
    """`ID:PATH` -> (ID, PATH); a local path (write `./a:b` for a local name with a colon)."""
    match = REMOTE.fullmatch(spec)
    return (match.group(1), match.group(2)) if match else None


def cp(client: Client, args: argparse.Namespace, con: Console, stdout: BinaryIO) -> int:
    src, dst = split_remote(args.src), split_remote(args.dst)
    if src and dst:
        raise CommandError("cp copies between a container and this host, not between containers")
    if not src and not dst:
        raise CommandError("cp needs one side as ID:PATH, e.g. cp data.csv ID:/mnt/data/")
    if dst:
        return _upload(client, Path(args.src), *dst, con, args.json)
    assert src is not None
    return _download(client, *src, args.dst, con, stdout)


def upload_name(local: Path, remote_path: str) -> tuple[str, bool]:
    """(file name to upload as, whether the remote directory part was dropped)."""
    if remote_path.rstrip("/") in ("", WORKSPACE) or remote_path.endswith("/"):
        return local.name, remote_path.rstrip("/") not in ("", WORKSPACE)
    return posixpath.basename(remote_path), posixpath.dirname(remote_path) != WORKSPACE


def _upload(
    client: Client, local: Path, ref: str, remote_path: str, con: Console, as_json: bool
) -> int:
    name, dropped = upload_name(local, remote_path)
    if dropped:
        con.error(f"uploads keep only the file name: copying to {WORKSPACE}/{name}")
    cid = resolve(client, ref)
    try:
        with open(local, "rb"):  # readable by us: the upload reopens it to stream it
            pass
    except OSError as exc:
        raise CommandError(f"cannot read {local}: {exc.strerror}") from None
    if not os.path.isfile(local):
        raise CommandError(f"{local} is not a regular file")
    made = client.containers.files.upload(cid, local, filename=name)
    if as_json:
        output.print_json(made.raw, con.out)
    else:
        con.out.write(f"{made.path}\n")
    return 0


def _download(
    client: Client, ref: str, remote_path: str, local: str, con: Console, stdout: BinaryIO
) -> int:
    wanted = posixpath.normpath(posixpath.join(WORKSPACE, remote_path))
    cid = resolve(client, ref)
    files = client.containers.files.list(cid)
    match = next((f for f in files if f.path == wanted), None)
    if match is None:
        raise NotFound(f"No file {wanted} in container {cid}.", status=404, request_id=None)
    if local == "-":
        client.containers.files.download(cid, match.id, stdout)
        stdout.flush()
        return 0
    target = Path(local)
    if target.is_dir():
        target = target / posixpath.basename(wanted)
    client.containers.files.download(cid, match.id, target)  # whole, or nothing at target
    return 0
