"""sandbox.cgroups against fake v1/v2 cgroupfs trees, plus a few checks on the real host."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sandbox.cgroups import (
    CgroupCounters,
    CgroupError,
    CgroupGone,
    CgroupLayout,
    CgroupVersion,
    children,
    make_work_group,
)

GROUP = "/sandboxd/cntr_abc"
V1_UNLIMITED = "9223372036854771712"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _make_v2(root: Path, *, memory_max: str = "max\n") -> Path:
    _write(root / "cgroup.controllers", "cpuset cpu io memory pids\n")
    group = root / "sandboxd" / "cntr_abc"
    _write(
        group / "memory.events",
        "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\noom_group_kill 0\n",
    )
    _write(group / "memory.current", "1048576\n")
    _write(group / "memory.max", memory_max)
    _write(group / "pids.current", "4\n")
    _write(group / "pids.events", "max 5\n")
    _write(group / "cgroup.procs", "101\n102\n")
    (root / "sandboxd" / "cntr_other").mkdir()
    return group


def _make_v1(root: Path) -> None:
    for hierarchy in ("memory", "pids", "cpu,cpuacct", "freezer", "systemd", "unified"):
        (root / hierarchy).mkdir(parents=True)
    (root / "cpu").symlink_to("cpu,cpuacct")
    (root / "cpuacct").symlink_to("cpu,cpuacct")
    mem = root / "memory" / "sandboxd" / "cntr_abc"
    _write(mem / "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    _write(mem / "memory.usage_in_bytes", "2097152\n")
    _write(mem / "memory.limit_in_bytes", V1_UNLIMITED + "\n")
    _write(mem / "cgroup.procs", "201\n")
    pids = root / "pids" / "sandboxd" / "cntr_abc"
    _write(pids / "pids.current", "3\n")
    _write(pids / "pids.events", "max 7\n")


def _strip_files(tree: Path) -> None:
    """Fake trees hold regular files; on cgroupfs rmdir works regardless of the control files."""
    for dirpath, _, filenames in os.walk(tree):
        for name in filenames:
            os.unlink(os.path.join(dirpath, name))


# -- v2 ---------------------------------------------------------------------------------------


def test_v2_detect_and_dirs(tmp_path: Path) -> None:
    _make_v2(tmp_path)
    layout = CgroupLayout.detect(tmp_path)
    assert layout == CgroupLayout(CgroupVersion.V2, tmp_path)
    assert layout.dirs(GROUP) == [tmp_path / "sandboxd" / "cntr_abc"]


def test_v2_counters(tmp_path: Path) -> None:
    _make_v2(tmp_path)
    reader = CgroupLayout.detect(tmp_path).reader(GROUP)
    assert reader.exists()
    assert reader.counters() == CgroupCounters(
        oom_kills=2, memory_bytes=1048576, memory_limit=None, pids_current=4, pids_limit_hits=5
    )
    assert reader.pids() == [101, 102]


def test_v2_numeric_memory_max(tmp_path: Path) -> None:
    _make_v2(tmp_path, memory_max="536870912\n")
    assert CgroupLayout.detect(tmp_path).reader(GROUP).counters().memory_limit == 536870912


def test_v2_children(tmp_path: Path) -> None:
    _make_v2(tmp_path)
    layout = CgroupLayout.detect(tmp_path)
    assert children(layout, "/sandboxd") == ["cntr_abc", "cntr_other"]
    assert children(layout, "/") == ["sandboxd"]
    assert children(layout, "/nope") == []


def test_v2_remove_deepest_first(tmp_path: Path) -> None:
    group = _make_v2(tmp_path)
    (group / "sub" / "deeper").mkdir(parents=True)
    _strip_files(group)
    reader = CgroupLayout.detect(tmp_path).reader(GROUP)
    reader.remove()
    assert not group.exists()
    assert not reader.exists()
    assert (tmp_path / "sandboxd" / "cntr_other").is_dir()  # siblings and parent untouched
    reader.remove()  # already gone: fine
    with pytest.raises(CgroupGone):
        reader.counters()
    assert reader.pids() == []


def test_remove_failure_raises_after_trying_everything(tmp_path: Path) -> None:
    _make_v1(tmp_path)
    reader = CgroupLayout.detect(tmp_path).reader(GROUP)
    (tmp_path / "freezer" / "sandboxd" / "cntr_abc").mkdir(parents=True)  # removable
    with pytest.raises(CgroupError, match="memory"):  # regular files: ENOTEMPTY here
        reader.remove()
    assert not (tmp_path / "freezer" / "sandboxd" / "cntr_abc").exists()


# -- v1 / hybrid ------------------------------------------------------------------------------


def test_v1_detect_and_dirs(tmp_path: Path) -> None:
    _make_v1(tmp_path)
    layout = CgroupLayout.detect(tmp_path)
    assert layout.version is CgroupVersion.V1  # the empty cgroup2 at unified/ does not count
    rel = Path("sandboxd", "cntr_abc")
    assert layout.dirs(GROUP) == [
        tmp_path / h / rel
        for h in ("cpu,cpuacct", "freezer", "memory", "pids", "systemd", "unified")
    ]


def test_v1_counters(tmp_path: Path) -> None:
    _make_v1(tmp_path)
    reader = CgroupLayout.detect(tmp_path).reader(GROUP)
    assert reader.exists()
    # Without a work group every OOM kill is in the group itself: the agent's own group.
    assert reader.counters() == CgroupCounters(
        oom_kills=1,
        memory_bytes=2097152,
        memory_limit=None,
        pids_current=3,
        pids_limit_hits=7,
        agent_oom_kills=1,
    )
    assert reader.pids() == [201]
    _write(tmp_path / "memory" / GROUP[1:] / "memory.limit_in_bytes", "1073741824\n")
    assert reader.counters().memory_limit == 1073741824


def test_v1_missing_files_are_zero(tmp_path: Path) -> None:
    _make_v1(tmp_path)
    for name in ("memory.oom_control", "memory.limit_in_bytes", "memory.usage_in_bytes"):
        (tmp_path / "memory" / GROUP[1:] / name).unlink()
    (tmp_path / "pids" / GROUP[1:] / "pids.events").unlink()
    counters = CgroupLayout.detect(tmp_path).reader(GROUP).counters()
    assert counters == CgroupCounters(0, 0, None, 3, 0)


def test_v1_remove_and_children(tmp_path: Path) -> None:
    _make_v1(tmp_path)
    layout = CgroupLayout.detect(tmp_path)
    for h in ("cpu,cpuacct", "systemd", "unified"):
        (tmp_path / h / "sandboxd" / "cntr_abc").mkdir(parents=True)
    assert children(layout, "/sandboxd") == ["cntr_abc"]
    _strip_files(tmp_path)
    reader = layout.reader(GROUP)
    reader.remove()
    assert not reader.exists()
    assert children(layout, "/sandboxd") == []
    assert not any(top.exists() for top in layout.dirs(GROUP))
    assert (tmp_path / "memory" / "sandboxd").is_dir()  # the parent is left alone
    with pytest.raises(CgroupGone):
        reader.counters()


def test_v1_children_in_any_hierarchy(tmp_path: Path) -> None:
    """A runc killed mid-create leaves its group in some hierarchies only: still a child."""
    _make_v1(tmp_path)
    layout = CgroupLayout.detect(tmp_path)
    (tmp_path / "freezer" / "sandboxd" / "cntr_half").mkdir(parents=True)
    assert children(layout, "/sandboxd") == ["cntr_abc", "cntr_half"]
    _strip_files(tmp_path)
    layout.reader("/sandboxd/cntr_half").remove()
    assert children(layout, "/sandboxd") == ["cntr_abc"]


def test_v1_group_missing_in_memory_is_gone(tmp_path: Path) -> None:
    _make_v1(tmp_path)
    reader = CgroupLayout.detect(tmp_path).reader("/sandboxd/other")
    assert not reader.exists()
    assert reader.pids() == []
    with pytest.raises(CgroupGone):
        reader.counters()


# -- robustness -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        "",
        "\n\n",
        "garbage",
        "oom_kill",
        "oom_kill -1\nmax -2",
        "oom_kill 1 2\nmax x",
        "oom_kill 0x10\nmax 1e3",
        "oom_kill ²\nmax ①",
        "oom_kill " + "9" * 5000 + "\nmax " + "9" * 30,
        "\xff\xfe\x00 oom_kill\x00 3",
    ],
)
def test_malformed_content_reads_as_zero(tmp_path: Path, content: str) -> None:
    group = _make_v2(tmp_path)
    for name in ("memory.events", "memory.current", "memory.max", "pids.current", "pids.events"):
        (group / name).write_text(content, encoding="utf-8", errors="surrogateescape")
    (group / "cgroup.procs").write_text(content + "\n-3\n0\n42\n 43 \nx", errors="surrogateescape")
    reader = CgroupLayout.detect(tmp_path).reader(GROUP)
    assert reader.counters() == CgroupCounters(0, 0, None, 0, 0)
    assert reader.pids() == [42, 43]


def test_malformed_binary_content(tmp_path: Path) -> None:
    _make_v1(tmp_path)
    (tmp_path / "memory" / GROUP[1:] / "memory.oom_control").write_bytes(b"oom_kill \xff9\n")
    (tmp_path / "memory" / GROUP[1:] / "memory.usage_in_bytes").write_bytes(b"\x00" * 100)
    counters = CgroupLayout.detect(tmp_path).reader(GROUP).counters()
    assert (counters.oom_kills, counters.memory_bytes) == (0, 0)


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/",
        "sandboxd/x",
        "//sandboxd/x",
        "/sandboxd//x",
        "/sandboxd/x/",
        "/sandboxd/./x",
        "/sandboxd/../x",
        "/..",
        "/sandboxd/x/..",
        "/sandboxd/\0x",
    ],
)
def test_bad_paths_rejected(tmp_path: Path, path: str) -> None:
    _make_v2(tmp_path)
    layout = CgroupLayout.detect(tmp_path)
    with pytest.raises(ValueError, match="cgroups path"):
        layout.reader(path)
    with pytest.raises(ValueError, match="cgroups path"):
        layout.dirs(path)
    if path != "/":
        with pytest.raises(ValueError, match="cgroups path"):
            children(layout, path)


def test_detect_without_hierarchy(tmp_path: Path) -> None:
    with pytest.raises(CgroupError, match="no usable cgroup hierarchy"):
        CgroupLayout.detect(tmp_path)
    assert not issubclass(CgroupError, ValueError)
    assert issubclass(CgroupGone, CgroupError)


# -- the real host (v1 + empty cgroup2 at unified/ on the dev machine) ------------------------

REAL_ROOT = Path("/sys/fs/cgroup")
real_v1 = pytest.mark.skipif(
    not (REAL_ROOT / "memory").is_dir() or os.geteuid() != 0,
    reason="needs root on a cgroup v1/hybrid host",
)


@pytest.mark.root
@real_v1
def test_real_host_is_v1() -> None:
    layout = CgroupLayout.detect()
    assert layout == CgroupLayout(CgroupVersion.V1, REAL_ROOT)
    assert REAL_ROOT / "memory" / "x" in layout.dirs("/x")
    assert REAL_ROOT / "pids" / "x" in layout.dirs("/x")


@pytest.mark.root
@real_v1
def test_real_group_lifecycle() -> None:
    layout = CgroupLayout.detect()
    name = f"sandboxd-unittest-{secrets.token_hex(6)}"
    created = [REAL_ROOT / "memory" / name, REAL_ROOT / "pids" / name]
    proc: subprocess.Popen[bytes] | None = None
    try:
        for d in created:
            d.mkdir()
        reader = layout.reader(f"/{name}")
        assert reader.exists()
        assert name in children(layout, "/")
        counters = reader.counters()
        assert (counters.oom_kills, counters.pids_current, counters.pids_limit_hits) == (0, 0, 0)
        assert counters.memory_limit is None
        assert reader.pids() == []

        proc = subprocess.Popen(["sleep", "60"])
        for d in created:
            (d / "cgroup.procs").write_text(f"{proc.pid}\n")
        assert reader.pids() == [proc.pid]
        assert reader.counters().pids_current == 1
        with pytest.raises(CgroupError, match="Device or resource busy"):
            reader.remove()

        reader.kill_all()
        assert proc.wait(timeout=5) == -signal.SIGKILL
        deadline = time.monotonic() + 5
        while True:
            try:
                reader.remove()
                break
            except CgroupError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert not reader.exists()
        assert not any(d.exists() for d in created)
        with pytest.raises(CgroupGone):
            reader.counters()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        for d in created:
            if d.exists():
                d.rmdir()


# -- the work group ---------------------------------------------------------------------------


def _cgroupfs_dir(path: Path, *files: str) -> None:
    """What mkdir in a real cgroupfs makes: the directory with its files."""
    for name in files:
        _write(path / name, "")


def test_v1_work_group_limits_and_files(tmp_path: Path) -> None:
    _make_v1(tmp_path)
    mem = tmp_path / "memory" / GROUP[1:]
    _write(mem / "tasks", "201\n")
    _cgroupfs_dir(mem / "work", "tasks", "memory.limit_in_bytes", "memory.memsw.limit_in_bytes")
    layout = CgroupLayout.detect(tmp_path)
    group = make_work_group(layout, GROUP, 1 << 30)
    try:
        assert group.mode == "tasks" and len(group.fds) == 2
        assert (mem / "work" / "memory.limit_in_bytes").read_text() == str(1 << 30)
        assert (mem / "work" / "memory.memsw.limit_in_bytes").read_text() == str(1 << 30)
        os.write(group.fds[0], b"0")  # the fds write to work/tasks, then the group's tasks
        os.write(group.fds[1], b"0")
        assert (mem / "work" / "tasks").read_text() == "0"
    finally:
        group.close()
    # OOM kills in the work group count for the sandbox, not for the agent.
    _write(mem / "work" / "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n")
    counters = layout.reader(GROUP).counters()
    assert (counters.oom_kills, counters.agent_oom_kills) == (5, 1)
    assert counters.memory_limit == 1 << 30  # the tier sandbox code runs under
    assert layout.reader(GROUP).kill_counters() == (5, 7)


def test_v2_work_group_moves_the_agent_first(tmp_path: Path) -> None:
    group_dir = _make_v2(tmp_path)
    _write(group_dir / "cgroup.subtree_control", "")
    _cgroupfs_dir(group_dir / "agent", "cgroup.procs", "memory.events")
    _cgroupfs_dir(group_dir / "work", "cgroup.procs", "memory.max", "memory.swap.max")
    layout = CgroupLayout.detect(tmp_path)
    group = make_work_group(layout, GROUP, 4 << 30)
    try:
        assert group.mode == "procs" and len(group.fds) == 1
    finally:
        group.close()
    assert (group_dir / "agent" / "cgroup.procs").read_text() == "102"  # each pid written
    assert (group_dir / "cgroup.subtree_control").read_text() == "+memory"
    assert (group_dir / "work" / "memory.max").read_text() == str(4 << 30)
    assert (group_dir / "work" / "memory.swap.max").read_text() == "0"
    _write(group_dir / "agent" / "memory.events", "oom 1\noom_kill 1\n")
    counters = layout.reader(GROUP).counters()
    assert (counters.oom_kills, counters.agent_oom_kills) == (2, 1)  # v2 events: hierarchical
    assert counters.memory_limit == 4 << 30


def test_work_group_refused_is_a_cgroup_error(tmp_path: Path) -> None:
    _make_v1(tmp_path)  # no work/ files: a cgroupfs that refused the group
    (tmp_path / "memory" / GROUP[1:] / "work").mkdir()
    with pytest.raises(CgroupError):
        make_work_group(CgroupLayout.detect(tmp_path), GROUP, 1 << 30)
