"""Fixtures of the runtime contract suite, parametrised over backends.

A backend joins the suite by adding its name to ``BACKENDS`` and an ``_open_<name>`` context
manager that yields a started ``Harness``: the runtime under test plus the host-side knowledge
the suite needs to prove that a destroyed sandbox left nothing behind (``leftovers``).

Every runtime gets its own short state dir under /tmp (unix socket paths must stay under 107
bytes; building the rootfs skeleton costs ~10 ms) and every sandbox of the test run lives under
one random cgroup parent. A runtime's teardown destroys every sandbox it still lists; the
session finalizer then checks that nothing of ours is left (mounts, dirs, cgroups) and removes
whatever it finds, failing loudly if it had to.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bench import dockerd
from sandbox.agent_client import AgentClient, ExecChunk
from sandbox.cgroups import CgroupLayout
from sandbox.docker.container import ContainerArgs
from sandbox.docker.engine import Engine
from sandbox.docker.runtime import DockerRuntime, DockerSettings
from sandbox.errors import RuntimeFailure
from sandbox.execution import CommandOutcome, CommandRequest, run_command
from sandbox.host.base import HostRuntime
from sandbox.host.dirs import instance_of
from sandbox.idranges import HOST_REGISTRY
from sandbox.oci.runtime import OciRuntime, OciSettings, forget_instance
from sandbox.runtime import Runtime
from sandbox.spec import MEMORY_TIERS, SandboxSpec
from tests.hosttraces import claims

BACKENDS = ["oci", pytest.param("docker", marks=pytest.mark.docker)]
SECCOMP_PROFILE = Path(__file__).resolve().parents[2] / "sandbox" / "seccomp.json"
STATE_PREFIX = "sbxd-rt-"
GIB = MEMORY_TIERS["1g"]
MIB = 1 << 20


def new_id() -> str:
    """A sandbox id shaped like the daemon's (so socket paths have their real length)."""
    return "cntr_" + secrets.token_hex(24)


def spec(memory_bytes: int = GIB, **kw: Any) -> SandboxSpec:
    return SandboxSpec(new_id(), memory_bytes, **kw)


async def sh(
    runtime: Runtime,
    sid: str,
    cmd: str,
    *,
    env: dict[str, str] | None = None,
    cwd: str = "",
    stdin: str = "",
    timeout_ms: int = 30_000,
    max_output: int = 1 << 20,
) -> tuple[str, str, CommandOutcome]:
    """Run `cmd` (a /bin/sh line) in the sandbox; (stdout, stderr, outcome).

    Bytes that are not UTF-8 survive as surrogates, so len() counts bytes of any output.
    """
    out, err = bytearray(), bytearray()

    async def sink(chunk: ExecChunk) -> None:
        (out if chunk.stream == "stdout" else err).extend(chunk.data)

    req = CommandRequest(cmd, env or {}, cwd, stdin, timeout_ms, max_output)
    async with runtime.agent(sid).connection() as conn:
        outcome = await run_command(conn, lambda: runtime.kill_counters(sid), req, sink)
    return (
        out.decode(errors="surrogateescape"),
        err.decode(errors="surrogateescape"),
        outcome,
    )


async def check(runtime: Runtime, sid: str, cmd: str, **kw: Any) -> str:
    """Run `cmd`, require exit 0 and no stderr, return its stdout."""
    out, err, outcome = await sh(runtime, sid, cmd, **kw)
    assert (outcome.exit_code, err) == (0, ""), (cmd, out, err, outcome)
    return out


def sandbox_uid(harness: Harness, sid: str) -> int:
    """The sandbox user's uid as the sandbox sees it: 1000 in the oci backend's user
    namespace; docker has none, so it is the sandbox's own host uid (its range + 1000)."""
    if harness.name == "oci":
        return 1000
    assert isinstance(harness.runtime, HostRuntime)
    first = harness.runtime.first_host_id(sid)
    assert first is not None
    return first + 1000


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    """`data` as an async stream of `size`-byte chunks (what AgentClient.write_file takes)."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def read_all(agent: AgentClient, path: str, max_bytes: int = 64 * MIB) -> bytes:
    async with agent.read_file(path, max_bytes) as (size, chunks):
        data = b"".join([c async for c in chunks])
    assert len(data) == size
    return data


@dataclass
class Harness:
    """A started runtime, and how to find what a sandbox of it left on the host."""

    name: str
    runtime: Runtime
    cgroup_parent: str
    # Human-readable traces of `sandbox_id` still on the host; [] when it is fully gone.
    leftovers: Callable[[str], list[str]]


@dataclass
class RunResources:
    """What this pytest session created on the host; the session finalizer removes it."""

    cgroup_parent: str = field(default_factory=lambda: "/sandboxd-test-" + secrets.token_hex(4))
    state_dirs: list[Path] = field(default_factory=list)
    engine_url: str = ""  # the docker tests' engine (set once a docker test asks for it)

    @property
    def docker_cgroup_parent(self) -> str:
        return f"{self.cgroup_parent}-docker"

    def new_state_dir(self) -> Path:
        """A new base dir (o+x, as /var/lib is): the runtime's state dir is <base>/state
        (0700, made by the runtime), its runtime root <base>/runc."""
        path = Path(tempfile.mkdtemp(prefix=STATE_PREFIX))
        path.chmod(0o711)
        self.state_dirs.append(path)
        return path


# ------------------------------------------------------------------------------ host probes


def mounts_under(prefix: Path) -> list[str]:
    """Mount points (from /proc/self/mountinfo) at or below `prefix`, deepest first."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == str(prefix) or point.startswith(f"{prefix}/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def loop_devices_backed_by(prefix: Path) -> list[str]:
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            if backing.read_text().strip().startswith(f"{prefix}/"):
                found.append(backing.parent.parent.name)
    return found


def cgroup_dirs(parent: str, sandbox_id: str | None = None) -> list[Path]:
    path = parent if sandbox_id is None else f"{parent}/{sandbox_id}"
    return [d for d in CgroupLayout.detect().dirs(path) if d.is_dir()]


def claims_of(instance: str, sandbox_id: str | None = None) -> list[str]:
    """Id-range claims (file names) in the host registry made by `instance` (for
    `sandbox_id`)."""
    mine = claims(instance)
    names = {p.name.split("-")[0]: p.name for p in HOST_REGISTRY.glob("*-*")}
    return [names[first] for first, sid in mine.items() if sandbox_id in (None, sid)]


def _host_leftovers(runtime: HostRuntime, state_dir: Path, sandbox_id: str) -> list[str]:
    """What either backend leaves on the host: the sandbox's id-range claim, and any sandbox
    dir, mount or loop device of the state dir that no live sandbox of the runtime owns
    (dirs are named by the first id of a live claim)."""
    found = [f"id claim {c}" for c in claims_of(runtime.instance, sandbox_id)]
    live = {c.split("-")[0] for c in claims_of(runtime.instance)}
    sandboxes = state_dir / "sandboxes"
    for sdir in sandboxes.iterdir() if sandboxes.is_dir() else []:
        if sdir.name not in live:
            found.append(f"sandbox dir {sdir}")
            found += [f"mount {m}" for m in mounts_under(sdir)]
    mounted = {m.split("/")[-2] for m in mounts_under(sandboxes)}
    found += [f"mount of {name}" for name in mounted - live]
    attached = loop_devices_backed_by(state_dir)
    if len(attached) > len(mounts_under(sandboxes)):
        found.append(f"loop devices {attached} for {len(mounts_under(sandboxes))} workspaces")
    return found


def _oci_leftovers(runtime: OciRuntime, settings: OciSettings, sandbox_id: str) -> list[str]:
    found = _host_leftovers(runtime, settings.state_dir, sandbox_id)
    if CgroupLayout.detect().reader(f"{runtime.cgroup_base}/{sandbox_id}").exists():
        found.append("memory cgroup")
    found += [f"cgroup dir {d}" for d in cgroup_dirs(runtime.cgroup_base, sandbox_id)]
    if (runtime.run_dir / "state" / sandbox_id).exists():
        found.append(f"runc state {runtime.run_dir / 'state' / sandbox_id}")
    return found


# ------------------------------------------------------------------------------ backends

FAKE_RUNC = {
    # Starts the container for real, then reports a failure.
    "after_start": """#!/bin/sh
{runc} "$@" || exit $?
for arg in "$@"; do [ "$arg" = run ] && exit 1; done
exit 0
""",
}


@contextlib.asynccontextmanager
async def _open_oci(run: RunResources, failure: str | None) -> AsyncIterator[Harness]:
    """`failure`: None; "refuse": runc fails every call; "after_start": `run` starts the
    container, then exits 1."""
    state = run.new_state_dir()
    healthy = OciSettings(
        state_dir=state / "state", runtime_root=state / "runc", cgroup_parent=run.cgroup_parent
    )
    settings = healthy
    if failure == "refuse":
        settings = dataclasses.replace(healthy, binary="/bin/false")
    elif failure in FAKE_RUNC:
        fake = state / "fake-runc"
        fake.write_text(FAKE_RUNC[failure].format(runc=shutil.which("runc")))
        fake.chmod(0o755)
        settings = dataclasses.replace(healthy, binary=str(fake))
    elif failure is not None:
        raise ValueError(failure)
    seccomp = json.loads(SECCOMP_PROFILE.read_text())
    runtime = OciRuntime(settings, seccomp)
    try:
        await runtime.start()
        yield Harness(
            "oci", runtime, run.cgroup_parent, lambda sid: _oci_leftovers(runtime, settings, sid)
        )
    finally:
        try:
            if failure is None:
                await _destroy_all(runtime)
        finally:
            await runtime.close()
        if failure is not None:
            # A runtime built to fail cannot be trusted to clean up: a healthy one over the
            # same state does it (and fails the test if it cannot).
            cleaner = OciRuntime(healthy, seccomp)
            try:
                await cleaner.start()
                await _destroy_all(cleaner)
            finally:
                await cleaner.close()
        forget_instance(settings.runtime_root, [run.cgroup_parent], runtime.instance)
        shutil.rmtree(state)


def _docker_leftovers(
    runtime: DockerRuntime, settings: DockerSettings, engine_url: str, sandbox_id: str
) -> list[str]:
    found = _host_leftovers(runtime, settings.state_dir, sandbox_id)
    mine = dockerd.containers(engine_url, f"sandboxd.id={sandbox_id}")
    found += [f"container {c['Id'][:12]} ({c.get('State')})" for c in mine]
    # A container's cgroup is <parent>/<container id>: any group there whose container is
    # gone was left behind (live containers of other tests may share the parent).
    live = {c["Id"] for c in dockerd.containers(engine_url, "sandboxd.managed=1")}
    for top in cgroup_dirs(runtime.cgroup_base):
        found += [f"cgroup {d}" for d in top.iterdir() if d.is_dir() and d.name not in live]
    return found


class _FailingEngine(Engine):
    """`refuse`: the engine refuses every create (an image it does not have);
    `after_start`: the container starts, then the call reports a failure."""

    def __init__(self, url: str, failure: str) -> None:
        super().__init__(url, 4, 60.0)
        self._failure = failure

    async def run(self, name: str, args: ContainerArgs) -> str:
        if self._failure == "refuse":
            create = {**args.create, "image": "sandboxd/absent:none"}
            return await super().run(name, dataclasses.replace(args, create=create))
        await super().run(name, args)
        raise RuntimeFailure("engine failed after the start")


@contextlib.asynccontextmanager
async def _open_docker(run: RunResources, failure: str | None) -> AsyncIterator[Harness]:
    assert run.engine_url, "the docker_engine fixture first"
    if failure not in (None, "refuse", "after_start"):
        raise ValueError(failure)
    state = run.new_state_dir()
    settings = DockerSettings(
        state_dir=state / "state",
        engine_url=run.engine_url,
        cgroup_parent=run.docker_cgroup_parent,
        threads=4,
    )
    seccomp = json.loads(SECCOMP_PROFILE.read_text())
    engine = _FailingEngine(run.engine_url, failure) if failure else None
    runtime = DockerRuntime(settings, seccomp, engine)
    url = run.engine_url
    try:
        await runtime.start()
        yield Harness(
            "docker",
            runtime,
            run.docker_cgroup_parent,
            lambda sid: _docker_leftovers(runtime, settings, url, sid),
        )
    finally:
        try:
            await _destroy_all(runtime)
        finally:
            await runtime.close()
        forget_instance(state / "runc", [run.docker_cgroup_parent], runtime.instance)
        shutil.rmtree(state)


async def _destroy_all(runtime: Runtime) -> None:
    for sid in await runtime.list_ids():
        await runtime.destroy(sid)


OPENERS = {"oci": _open_oci, "docker": _open_docker}


def open_backend(
    name: str, run: RunResources, failure: str | None = None
) -> contextlib.AbstractAsyncContextManager[Harness]:
    return OPENERS[name](run, failure)


# ------------------------------------------------------------------------------ fixtures


def _force_cleanup(run: RunResources) -> list[str]:
    """Remove whatever the test run left on the host; describe what had to be removed."""
    leaks: list[str] = []
    for state in run.state_dirs:
        for claim in claims_of(instance_of(state / "state")):
            leaks.append(f"id claim {claim}")
            (HOST_REGISTRY / claim).unlink(missing_ok=True)
        for runc_root in (state / "runc").glob("*/state"):
            for entry in runc_root.iterdir():
                leaks.append(f"runc container {entry.name}")
                subprocess.run(
                    ["runc", "--root", str(runc_root), "delete", "--force", entry.name],
                    capture_output=True,
                    check=False,
                )
        for point in mounts_under(state):
            leaks.append(f"mount {point}")
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        if state.exists():
            leaks.append(f"state dir {state}")
            shutil.rmtree(state, ignore_errors=True)
    if run.engine_url and dockerd.answers(run.engine_url.removeprefix("unix://")):
        for state in run.state_dirs:
            label = f"sandboxd.instance={instance_of(state / 'state')}"
            for c in dockerd.containers(run.engine_url, label):
                leaks.append(f"container {c['Id'][:12]}")
                dockerd.remove_container(run.engine_url, c["Id"])
    tops = [*CgroupLayout.detect().dirs(run.cgroup_parent)]
    tops += CgroupLayout.detect().dirs(run.docker_cgroup_parent)
    for top in tops:
        for dirpath, _, _ in sorted(os.walk(top), key=lambda w: len(w[0]), reverse=True):
            if dirpath != str(top):
                leaks.append(f"cgroup {dirpath}")
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(dirpath)
    return leaks


@pytest.fixture(scope="session")
def run_resources() -> Iterator[RunResources]:
    run = RunResources()
    yield run
    leaks = _force_cleanup(run)
    remaining = cgroup_dirs(run.cgroup_parent) + [d for d in run.state_dirs if d.exists()]
    remaining += cgroup_dirs(run.docker_cgroup_parent)
    assert not remaining, f"could not remove: {remaining}"
    assert not leaks, f"the runtime suite left these behind: {leaks}"


def _needs_engine(name: str, request: pytest.FixtureRequest, run: RunResources) -> None:
    if name == "docker" and not run.engine_url:
        run.engine_url = request.getfixturevalue("docker_engine")


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest, run_resources: RunResources) -> str:
    """The backend under test, for tests that open their own (e.g. a failing) runtime."""
    name: str = request.param
    _needs_engine(name, request, run_resources)
    return name


@pytest_asyncio.fixture
async def backend(backend_name: str, run_resources: RunResources) -> AsyncIterator[Harness]:
    """A started runtime; every sandbox it still lists is destroyed at the end of the test."""
    async with open_backend(backend_name, run_resources) as harness:
        yield harness


@pytest_asyncio.fixture
async def sid(backend: Harness) -> str:
    """A running 1g sandbox with default limits (destroyed by the backend's teardown)."""
    s = spec()
    await backend.runtime.create(s)
    return s.sandbox_id


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=BACKENDS)
async def module_backend(
    request: pytest.FixtureRequest, run_resources: RunResources
) -> AsyncIterator[Harness]:
    """A runtime shared by a module (its tests need `asyncio(loop_scope="module")`)."""
    _needs_engine(request.param, request, run_resources)
    async with open_backend(request.param, run_resources) as harness:
        yield harness


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_sandbox(module_backend: Harness) -> str:
    """One 1g sandbox for a module of read-only checks (tests must not change its state)."""
    s = spec()
    await module_backend.runtime.create(s)
    return s.sandbox_id
