"""A daemon subprocess under a private temp root, startable, stoppable and killable at will,
plus host-side probes of everything a sandbox can leave behind."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import httpx2

from bench.launcher import LaunchError, SandboxdProcess, write_config
from daemon.config import RuntimeConfig
from sandbox.cgroups import CgroupLayout, children
from sandbox.host.dirs import instance_of
from sandbox.oci.runtime import forget_instance
from tests.hosttraces import claims, sandbox_dirs


class DaemonProcess:
    def __init__(self, runtime_defaults: bool = False, **sections: dict[str, Any]) -> None:
        """`runtime_defaults`: the production runtime root and cgroup parent (host-wide
        names that only the instance id keeps apart), not private ones under the temp root."""
        self.root = Path(tempfile.mkdtemp(prefix="sbxd-e2e-"))
        self.root.chmod(0o755)
        self.socket = str(self.root / "api.sock")
        runtime = RuntimeConfig()
        if runtime_defaults:
            self.runtime_root, self.cgroup_parent = Path(runtime.runtime_root), "/sandboxd"
        else:
            self.runtime_root = self.root / "runc"
            self.cgroup_parent = f"/sandboxd-e2e-{secrets.token_hex(4)}"
        self.log = self.root / "daemon.log"
        self.process = SandboxdProcess(self.root / "config.toml", self.socket, self.log)
        self._tables: dict[str, dict[str, Any]] = {
            "server": {"socket": self.socket},
            "runtime": {
                "runtime_root": str(self.runtime_root),
                "cgroup_parent": self.cgroup_parent,
            },
            # No warm pool unless a test asks for one: host traces then equal the records.
            "pool": {"sizes": {}},
        }
        self.write_config(**sections)

    def write_config(self, **sections: dict[str, Any]) -> None:
        """Merge `sections` into the config file (before start)."""
        tables = self._tables
        for name, values in sections.items():
            tables.setdefault(name, {}).update(values)
        write_config(self.root / "config.toml", tables, {"state_dir": f"{self.root}/state"})

    # ------------------------------------------------------------------ process

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.process.proc

    @proc.setter
    def proc(self, proc: subprocess.Popen[bytes] | None) -> None:
        self.process.proc = proc

    def start(
        self,
        timeout_s: float = 30,
        env: dict[str, str] | None = None,
        prefix: tuple[str, ...] = (),
        argv: list[str] | None = None,
    ) -> None:
        """Start `sandboxd serve` (optionally under a wrapper such as systemd-socket-activate,
        or another `argv`) and wait until it answers GET /healthz."""
        try:
            self.process.start(argv=argv, prefix=prefix, env=env, timeout_s=timeout_s)
        except LaunchError as exc:
            raise AssertionError(str(exc)) from None

    def stop(self, timeout_s: float = 60) -> int:
        return self.process.stop(timeout_s)

    def kill(self) -> None:
        self.process.kill()

    def client(self, timeout_s: float = 60) -> httpx2.Client:
        return httpx2.Client(
            transport=httpx2.HTTPTransport(uds=self.socket),
            base_url="http://localhost",
            timeout=timeout_s,
        )

    # ------------------------------------------------------------------- probes

    def rows(self) -> dict[str, str]:
        """container id -> status, read straight from the database."""
        db = sqlite3.connect(self.root / "state" / "sandboxd.db")
        try:
            return dict(db.execute("SELECT id, status FROM containers").fetchall())
        finally:
            db.close()

    @property
    def instance(self) -> str:
        return instance_of(self.root / "state")

    @property
    def runc_root(self) -> str:
        """This daemon instance's runc state."""
        return f"{self.runtime_root}/{self.instance}/state"

    @property
    def cgroup_base(self) -> str:
        return f"{self.cgroup_parent}/{self.instance}"

    def host_traces(self) -> dict[str, set[str]]:
        """Sandbox ids that have each kind of host resource right now (dirs and mounts are
        named by a sandbox's uid range: the claims in the host registry map them back)."""
        names = claims(self.instance)
        sandboxes = self.root / "state" / "sandboxes"
        mounts = {
            names.get(Path(line.split()[4]).parent.name, Path(line.split()[4]).parent.name)
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if str(sandboxes) in line.split()[4]
        }
        layout = CgroupLayout.detect()
        procs = {
            sid
            for sid in children(layout, self.cgroup_base)
            if layout.reader(f"{self.cgroup_base}/{sid}").pids()
        }
        return {
            "runc": set(_runc_ids(self.runc_root)),
            "dirs": set(sandbox_dirs(self.root / "state")),
            "claims": set(names.values()),
            "mounts": mounts,
            "cgroups": set(children(layout, self.cgroup_base)),
            "processes": procs,
        }

    def kill_group(self) -> None:
        """SIGKILL the daemon's process group (see SandboxdProcess.kill_group)."""
        self.process.kill_group()

    def cleanup(self) -> None:
        if self.proc is not None:  # a runc create left running would finish after the sweep
            self.kill_group()
        roots = [self.runc_root]
        if self.runtime_root == self.root / "runc":  # private: sandboxes of older daemons too
            roots.append(str(self.runtime_root))
        for root in roots:
            for sid in _runc_ids(root):
                subprocess.run(["runc", "--root", root, "delete", "-f", sid], check=False)
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            if str(self.root) in line.split()[4]:
                subprocess.run(["umount", "-l", line.split()[4]], check=False)
        layout = CgroupLayout.detect()
        layout.reader(self.cgroup_base).kill_all(10)  # e.g. the init of a half-made sandbox
        for parent in (self.cgroup_base, self.cgroup_parent):
            for sid in children(layout, parent):
                if sid.startswith("cntr_"):
                    with contextlib.suppress(Exception):
                        layout.reader(f"{parent}/{sid}").remove()
        parents = [self.cgroup_parent, f"{self.cgroup_parent}-docker"]
        forget_instance(self.runtime_root, parents, self.instance)
        # ...and the parent docker-backend tests give the engine (`<parent>-docker`), unless
        # it is the host's default, which other daemons may use.
        if self.runtime_root != Path(RuntimeConfig().runtime_root):
            for directory in [
                *layout.dirs(self.cgroup_parent),
                *layout.dirs(f"{self.cgroup_parent}-docker"),
            ]:
                with contextlib.suppress(OSError):
                    directory.rmdir()
        shutil.rmtree(self.root, ignore_errors=True)


def _runc_ids(root: str) -> list[str]:
    """The containers in runc state dir `root` (none if it is missing: `runc list` would
    make it, and an instance's runtime dir would outlive its cleanup)."""
    if not Path(root).is_dir():
        return []
    out = subprocess.run(
        ["runc", "--root", root, "list", "-q"], capture_output=True, text=True, check=False
    )
    return out.stdout.split()
