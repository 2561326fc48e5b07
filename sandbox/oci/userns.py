"""A user namespace owned by the sandbox's own first host id, for runc to join.

The kernel charges per-user counters (inotify instances and watches, mqueue bytes, pending
signals, namespaces...) hierarchically: inside a user namespace to the user there, and in the
parent namespace to the namespace's *owner*, the effective uid of whoever created it. A user
namespace that runc creates is owned by root, so every sandbox spent host root's budgets (128
inotify instances in one sandbox broke `tail -f` on the host). This one is created by a tiny
holder process running as the sandbox's first host id: the sandbox's usage is charged to that
id, which nothing else uses, and its in-namespace caps (/proc/sys/user/*) are set on the way.

The holder is `setpriv` (to the sandbox's first id), then `unshare --user` running sh: it
waits until the daemon has written its uid and gid maps, then re-executes sh, which (now root
in the namespace, with every capability there) writes the caps, says "ready", and waits for
its stdin to close. runc joins the namespace at /proc/<holder>/ns/user; once the sandbox's
init lives in it the holder is let go.

Blocking: call off the event loop.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from sandbox.errors import RuntimeFailure

UNSHARE = "/usr/bin/unshare"
SETPRIV = "/usr/bin/setpriv"
READY_TIMEOUT_S = 10.0
# Per-namespace caps, for the sandbox's own users. Nested user namespaces: none. The other
# namespace kinds: runc makes one of each inside; sandbox code can make none (no capability,
# seccomp), the cap is a second fence.
USER_SYSCTLS = {
    "max_user_namespaces": 0,
    "max_mnt_namespaces": 4,
    "max_pid_namespaces": 4,
    "max_ipc_namespaces": 4,
    "max_uts_namespaces": 4,
    "max_net_namespaces": 4,
    "max_cgroup_namespaces": 4,
    "max_time_namespaces": 4,
    "max_inotify_instances": 128,
    "max_inotify_watches": 65536,
    "max_fanotify_groups": 16,
    "max_fanotify_marks": 8192,
}
_WAIT_FOR_MAPS = 'read _ && exec /bin/sh -c "$1"'


def _caps_script() -> str:
    """Set the caps (each one that exists here: older kernels lack some), then say "ready",
    or "ready-uncapped" when the namespace refused them (e.g. an AppArmor policy that
    leaves namespaces of unprivileged users without capabilities): the sandbox then still
    has its own per-user budgets, without the tighter caps inside them."""
    writes = [
        f"echo {value} > /proc/sys/user/{name} 2>/dev/null || capped=false"
        for name, value in USER_SYSCTLS.items()
        if os.path.exists(f"/proc/sys/user/{name}")
    ]
    return "; ".join(
        [
            "capped=true",
            *writes,
            "if $capped; then echo ready; else echo ready-uncapped; fi",
            "read _",
        ]
    )


@dataclass
class Holder:
    """The holder process: its pid and our ends of its stdin and stdout."""

    pid: int
    stdin: int
    stdout: int


class UserNamespace:
    """`with UserNamespace(first, size) as ns:` ... `ns.map()`, run runc with `ns.path`,
    `ns.ready()`; the holder exits at the end of the block (the namespace lives on in the
    sandbox). The holder starts at `with`; other work can go on until `map()`, and until
    `ready()` after it."""

    def __init__(
        self, first: int, size: int, reap: Callable[[int], object] = lambda pid: reap(pid)
    ) -> None:
        """`reap` waits for the released holder's pid (off the create's path, if it likes)."""
        self._first, self._size = first, size
        self._reap = reap
        self._holder: Holder | None = None

    @property
    def path(self) -> str:
        assert self._holder is not None, "enter first"
        return f"/proc/{self._holder.pid}/ns/user"

    def __enter__(self) -> Self:
        """Start the holder: posix_spawn (a vfork, not a copy of the daemon's memory as
        subprocess's setuid path would make) of setpriv, which becomes the sandbox's first
        id, then unshare."""
        argv = [
            SETPRIV, f"--reuid={self._first}", f"--regid={self._first}", "--clear-groups",
            "--", UNSHARE, "--user", "--", "/bin/sh", "-c", _WAIT_FOR_MAPS, "holder",
            _caps_script(),
        ]  # fmt: skip
        to_child, from_us = os.pipe()
        to_us, from_child = os.pipe()
        try:
            pid = os.posix_spawn(
                SETPRIV,
                argv,
                {"PATH": "/usr/bin:/bin"},
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, to_child, 0),
                    (os.POSIX_SPAWN_DUP2, from_child, 1),
                    (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0),
                ],
            )
        except OSError as exc:
            for fd in (to_child, from_us, to_us, from_child):
                os.close(fd)
            raise RuntimeFailure(f"cannot start the user namespace holder: {exc}") from exc
        os.close(to_child)
        os.close(from_child)
        self._holder = Holder(pid, from_us, to_us)
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def map(self) -> None:
        """Map the namespace's ids (once the holder has unshared) and let it set its caps:
        from here runc may join it (the caps may still be on their way; they bound what is
        made after them, and runc makes nothing they forbid)."""
        holder = self._holder
        assert holder is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        ours = os.readlink("/proc/self/ns/user")
        while _user_ns(holder.pid) in (ours, None):
            if _exited(holder.pid) or time.monotonic() > deadline:
                raise RuntimeFailure("the user namespace holder did not unshare")
            time.sleep(0.0002)
        mapping = f"0 {self._first} {self._size}\n"
        try:
            for name in ("uid_map", "gid_map"):
                with open(f"/proc/{holder.pid}/{name}", "w") as f:
                    f.write(mapping)
            os.write(holder.stdin, b"\n")
        except OSError as exc:
            raise RuntimeFailure(f"cannot map the sandbox's user namespace: {exc}") from exc

    def ready(self) -> bool:
        """Wait until the caps are set (after map()); False when the namespace refused
        them (see _caps_script)."""
        holder = self._holder
        assert holder is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([holder.stdout], [], [], left)[0]:
                raise RuntimeFailure("the user namespace holder did not get ready")
            chunk = os.read(holder.stdout, 64)
            if not chunk:
                break
            line += chunk
        if line not in (b"ready\n", b"ready-uncapped\n"):
            raise RuntimeFailure("the user namespace holder did not get ready")
        return line == b"ready\n"

    def close(self) -> None:
        """Let the holder go (its stdin closes, it exits) and hand its pid to `reap`."""
        holder, self._holder = self._holder, None
        if holder is None:
            return
        os.close(holder.stdin)
        os.close(holder.stdout)
        self._reap(holder.pid)


def reap(pid: int) -> None:
    """Wait for a released holder (it exits at once; a stuck one is killed)."""
    deadline = time.monotonic() + 2
    while not _exited(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return
        time.sleep(0.001)


def _exited(pid: int) -> bool:
    """Has our child `pid` exited (and been reaped now)?"""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == pid


def _user_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/user")
    except OSError:
        return None
