"""A user namespace owned by the sandbox's own first host id, for runc to join.

The kernel charges per-user counters (inotify instances and watches, mqueue bytes, pending
signals, namespaces...) hierarchically: inside a user namespace to the user there, and in the
parent namespace to the namespace's *owner*, the effective uid of whoever created it. A user
namespace that runc creates is owned by root, so every sandbox spent host root's budgets (128
inotify instances in one sandbox broke `tail -f` on the host). This one is created by a tiny
holder process running as the sandbox's first host id: the sandbox's usage is charged to that
id, which nothing else uses, and its in-namespace caps (/proc/sys/user/*) are set on the way.

The holder is `unshare --user` running sh: it waits until the daemon has written its uid and
gid maps, then re-executes sh, which (now root in the namespace, with every capability there)
writes the caps, says "ready", and waits for its stdin to close. runc joins the namespace at
/proc/<holder>/ns/user; once the sandbox's init lives in it the holder is let go.

Blocking: call off the event loop.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import time
from types import TracebackType
from typing import Self

from sandbox.errors import RuntimeFailure

UNSHARE = "/usr/bin/unshare"
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


class UserNamespace:
    """`with UserNamespace(first, size) as ns:` ... `ns.ready()`, then run runc with
    `ns.path`; the holder exits at the end of the block (the namespace lives on in the
    sandbox). The holder starts at `with`; other work can go on until `ready()`."""

    def __init__(self, first: int, size: int) -> None:
        self._first, self._size = first, size
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def path(self) -> str:
        assert self._proc is not None, "enter first"
        return f"/proc/{self._proc.pid}/ns/user"

    def __enter__(self) -> Self:
        try:
            self._proc = subprocess.Popen(
                [
                    UNSHARE,
                    "--user",
                    "--",
                    "/bin/sh",
                    "-c",
                    _WAIT_FOR_MAPS,
                    "holder",
                    _caps_script(),
                ],
                user=self._first,
                group=self._first,
                extra_groups=[],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env={"PATH": "/usr/bin:/bin"},
                cwd="/",
            )
        except OSError as exc:
            raise RuntimeFailure(f"cannot start the user namespace holder: {exc}") from exc
        return self

    def ready(self) -> bool:
        """Map the namespace's ids and wait until its caps are set; False when the
        namespace refused the caps (see _caps_script)."""
        return self._map_and_wait()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _map_and_wait(self) -> bool:
        proc = self._proc
        assert proc is not None
        assert proc.stdin is not None
        assert proc.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        ours = os.readlink("/proc/self/ns/user")
        while _user_ns(proc.pid) in (ours, None):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeFailure("the user namespace holder did not unshare")
            time.sleep(0.0002)
        mapping = f"0 {self._first} {self._size}\n"
        try:
            for name in ("uid_map", "gid_map"):
                with open(f"/proc/{proc.pid}/{name}", "w") as f:
                    f.write(mapping)
            proc.stdin.write(b"\n")
            proc.stdin.flush()
        except OSError as exc:
            raise RuntimeFailure(f"cannot map the sandbox's user namespace: {exc}") from exc
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
                raise RuntimeFailure("the user namespace holder did not get ready")
            chunk = os.read(proc.stdout.fileno(), 64)
            if not chunk:
                break
            line += chunk
        if line not in (b"ready\n", b"ready-uncapped\n"):
            raise RuntimeFailure("the user namespace holder did not get ready")
        return line == b"ready\n"

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        finally:
            assert proc.stdout is not None
            proc.stdout.close()


def _user_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/user")
    except OSError:
        return None
