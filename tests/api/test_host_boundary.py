"""The host boundary through the daemon (SECURITY.md): admission against host memory, the
agent's death noticed at once, and the egress proxy's own user."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import time
from pathlib import Path

import httpx2
import openai
import pytest

from bench import dockerd
from daemon.admission import host_memory_bytes
from proxy import ca
from sandbox.cgroups import CgroupLayout
from sandbox.host.dirs import instance_of
from tests.api.conftest import DaemonHandle
from tests.hosttraces import sandbox_dirs

pytestmark = pytest.mark.root


def agent_pid(daemon: DaemonHandle, cid: str) -> int:
    """The host pid of the container's agent (its init)."""
    if daemon.backend == "docker":
        return int(dockerd.api_get(daemon.engine_url, f"/containers/{cid}/json")["State"]["Pid"])
    group = f"{daemon.cgroup_parent}/{instance_of(daemon.root / 'state')}/{cid}"
    (pid,) = CgroupLayout.detect().reader(group).pids()[:1]  # the agent; its children: work/
    return pid


def test_a_killed_agent_expires_its_container_within_seconds(
    daemon: DaemonHandle, client: openai.OpenAI, raw: httpx2.Client
) -> None:
    """A SIGKILLed agent turns its container expired, with an agent_died event, within 5 s;
    its sandbox is freed."""
    box = client.containers.create(name="agent-killed")
    assert raw.post(f"/v1/containers/{box.id}/exec", json={"commands": ["true"]}).status_code == 200
    os.kill(agent_pid(daemon, box.id), 9)
    deadline = time.monotonic() + 5
    while client.containers.retrieve(box.id).status != "expired":
        assert time.monotonic() < deadline, "still running 5 s after its agent died"
        time.sleep(0.05)
    found = raw.get(f"/v1/containers/{box.id}").json()
    assert "agent died" in found["status_reason"]
    events = raw.get(f"/v1/containers/{box.id}/events").json()["data"]
    died = [e for e in events if e["type"] == "agent_died"]
    assert died and died[0]["detail"]["cause"] == "killed", events
    r = raw.post(f"/v1/containers/{box.id}/exec", json={"commands": ["true"]})
    assert (r.status_code, r.json()["error"]["message"]) == (400, "Container is expired.")
    deadline = time.monotonic() + 10
    while box.id in sandbox_dirs(daemon.root / "state"):
        assert time.monotonic() < deadline, "the dead sandbox's host side was not freed"
        time.sleep(0.05)
    metrics = raw.get("/metrics").text
    assert 'sandboxd_agent_deaths_total{cause="killed"}' in metrics
    client.containers.delete(box.id)


def test_a_tier_larger_than_the_host_is_refused_and_nothing_made(
    daemon: DaemonHandle, raw: httpx2.Client
) -> None:
    """A tier over host RAM (64g on a smaller host) is refused (400), nothing is made."""
    if host_memory_bytes() >= 64 << 30:
        pytest.skip("this host has 64 GiB or more")
    before = sorted(sandbox_dirs(daemon.root / "state"))
    listed = [c["id"] for c in raw.get("/v1/containers?limit=100").json()["data"]]
    r = raw.post("/v1/containers", json={"name": "huge", "memory_limit": "64g"})
    assert r.status_code == 400, r.text
    assert r.headers["x-should-retry"] == "false"
    err = r.json()["error"]
    assert err["param"] == "memory_limit" and "64g" in err["message"]
    assert [c["id"] for c in raw.get("/v1/containers?limit=100").json()["data"]] == listed
    assert sorted(sandbox_dirs(daemon.root / "state")) == before
    assert "sandboxd_memory_committed_bytes" in raw.get("/metrics").text


def test_the_proxy_runs_as_its_own_user_and_keeps_its_key(daemon: DaemonHandle) -> None:
    """The egress proxy never runs as nobody: its own system user, which reads its CA key
    and writes nothing in its directory (all of it root's: no name the proxy owns is one
    root acts on); no other uid reads the key or writes the directory; mitmproxy's re-read
    of its CA after the privilege drop logged no error."""
    user = pwd.getpwnam("sandboxd-proxy")
    assert user.pw_uid not in (0, 65534)
    proxies = [
        p for p in Path("/proc").iterdir()
        if p.name.isdigit() and " -I -m proxy " in _cmdline(p) and _ppid(p) == daemon.pid
    ]  # fmt: skip
    assert proxies, "no proxy process"
    for proc in proxies:
        uids = (proc / "status").read_text().split("Uid:")[1].split("\n")[0].split()
        assert {int(u) for u in uids} == {user.pw_uid}
    confdir = daemon.root / "state" / "proxy"
    st = confdir.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, user.pw_gid, 0o750)
    modes = {ca.KEY_FILE: 0o640, ca.CERT_FILE: 0o644, ca.DHPARAM_FILE: 0o644}
    assert set(modes) <= set(os.listdir(confdir))
    for entry in confdir.iterdir():
        est = entry.lstat()
        assert stat.S_ISREG(est.st_mode) and est.st_nlink == 1, entry
        assert (est.st_uid, est.st_gid) == (0, user.pw_gid), entry
        assert est.st_mode & 0o7777 == modes.get(entry.name, 0o644), entry
    # From inside the directory, as the proxy itself works (cwd entered while root): the
    # state dir above it is 0700, which would stop these opens before the directory could.
    key, planted = ca.KEY_FILE, "planted"
    as_proxy = (str(user.pw_uid), str(user.pw_gid))
    read = f"print(open({key!r}, 'rb').read(5))"
    assert _python_as(*as_proxy, read, confdir).stdout == "b'-----'\n"
    for who, code in (
        (as_proxy, f"open({planted!r}, 'x')"),
        (as_proxy, f"open({key!r}, 'r+b')"),
        (("4000001", "4000001"), read),
        (("4000001", "4000001"), f"open({planted!r}, 'x')"),
    ):
        assert "PermissionError" in _python_as(*who, code, confdir).stderr, (who, code)
    assert not (confdir / planted).exists()
    proxy_errors = [
        line for line in daemon.log.read_text(errors="replace").splitlines()
        if "Addon error" in line or ("PermissionError" in line and "proxy" in line)
        or line.startswith("sandboxd-proxy:")
    ]  # fmt: skip
    assert not proxy_errors, proxy_errors[:3]


def _python_as(uid: str, gid: str, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--",
         "/usr/bin/python3", "-I", "-c", code],
        capture_output=True, text=True, timeout=60, check=False, cwd=cwd,
    )  # fmt: skip


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ppid(proc: Path) -> int:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0
