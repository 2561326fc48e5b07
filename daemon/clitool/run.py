"""`exec` (streamed as it happens) and `cp` (upload to / download from /mnt/data)."""

from __future__ import annotations

import argparse
import contextlib
import os
import posixpath
import re
import shlex
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from daemon.clitool import output
from daemon.clitool.client import ApiError, Client, ClientError, file_size
from daemon.clitool.containers import CONTAINERS, Console, resolve

EX_TIMEOUT = 124  # as timeout(1)
EX_KILLED = 137  # 128 + SIGKILL, as a shell reports it
WORKSPACE = "/mnt/data"
REMOTE = re.compile(r"([^/:]+):(.*)", re.DOTALL)
KILLED = {
    "oom": "out of memory (the container's memory limit)",
    "pids": "too many processes (the container's pids limit)",
    "shutdown": "the daemon shut down",
}


def _emit(stream: TextIO, text: str) -> None:
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


def exit_status(event: dict[str, Any], con: Console) -> int:
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
        raise ClientError("the daemon sent an outcome without an exit code")
    return 128 - code if code < 0 else min(code, 255)


def exec_(client: Client, args: argparse.Namespace, con: Console, stdin: BinaryIO) -> int:
    if not args.argv:
        con.error("exec: give a command after the container, e.g. exec ID -- ls -l")
        return 2
    body: dict[str, Any] = {"commands": [command_line(args.argv, args.sh)], "stream": True}
    if args.timeout is not None:
        body["timeout_ms"] = max(1, round(args.timeout * 1000))
    if args.max_output is not None:
        body["max_output_length"] = args.max_output
    if args.workdir:
        body["working_directory"] = args.workdir
    if args.env:
        body["env"] = dict(_env_pair(item) for item in args.env)
    if args.stdin:
        try:
            body["stdin"] = stdin.read().decode("utf-8")
        except UnicodeDecodeError:
            raise ClientError("stdin must be UTF-8 text") from None
    cid = resolve(client, args.id)
    status: int | None = None
    for event in client.events(f"{CONTAINERS}/{cid}/exec", body):
        kind = event.get("type")
        if kind == "stdout":
            _emit(con.out, str(event.get("data", "")))
        elif kind == "stderr":
            _emit(con.err, str(event.get("data", "")))
        elif kind == "outcome":
            status = exit_status(event, con)
        elif kind == "error":
            error = event.get("error") or {}
            raise ApiError(200, str(error.get("message", "exec failed")), error.get("code"))
        elif kind == "done":
            break
    if status is None:
        raise ClientError("the exec stream ended before the command finished")
    return status


def _env_pair(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ClientError(f"--env wants KEY=VALUE, got {item!r}")
    return key, value


def split_remote(spec: str) -> tuple[str, str] | None:
    """`ID:PATH` -> (ID, PATH); a local path (write `./a:b` for a local name with a colon)."""
    match = REMOTE.fullmatch(spec)
    return (match.group(1), match.group(2)) if match else None


def cp(client: Client, args: argparse.Namespace, con: Console, stdout: BinaryIO) -> int:
    src, dst = split_remote(args.src), split_remote(args.dst)
    if src and dst:
        raise ClientError("cp copies between a container and this host, not between containers")
    if not src and not dst:
        raise ClientError("cp needs one side as ID:PATH, e.g. cp data.csv ID:/mnt/data/")
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
        source = open(local, "rb")  # noqa: SIM115 - closed below, after a size check
    except OSError as exc:
        raise ClientError(f"cannot read {local}: {exc.strerror}") from None
    with source:
        if not os.path.isfile(local):
            raise ClientError(f"{local} is not a regular file")
        made = client.upload(f"{CONTAINERS}/{cid}/files", name, source, file_size(source))
    if as_json:
        output.print_json(made, con.out)
    else:
        con.out.write(f"{made.get('path')}\n")
    return 0


def _download(
    client: Client, ref: str, remote_path: str, local: str, con: Console, stdout: BinaryIO
) -> int:
    wanted = posixpath.normpath(posixpath.join(WORKSPACE, remote_path))
    cid = resolve(client, ref)
    files = client.list_all(f"{CONTAINERS}/{cid}/files")
    match = next((f for f in files if f.get("path") == wanted), None)
    if match is None:
        raise ApiError(404, f"No file {wanted} in container {cid}.", "not_found")
    content = f"{CONTAINERS}/{cid}/files/{match['id']}/content"
    if local == "-":
        client.download(content, stdout)
        stdout.flush()
        return 0
    target = Path(local)
    if target.is_dir():
        target = target / posixpath.basename(wanted)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    done = False
    try:
        with os.fdopen(fd, "wb") as sink:
            client.download(content, sink)
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
        done = True
    finally:
        if not done:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return 0
