"""The docker backend's create() arguments carry every control of the spec (no engine needed)."""

from __future__ import annotations

import json

from sandbox.docker.container import AGENT_SOCKET, create_args
from sandbox.host.agent import AGENT_ARGV
from sandbox.host.mounts import HostPaths
from sandbox.seccomp import load_profile
from sandbox.spec import (
    AGENT_RESERVE_BYTES,
    EGRESS_DIR,
    MASKED_PATHS,
    SYSTEM_CA_BUNDLE,
    Limits,
    SandboxSpec,
)

PATHS = HostPaths(
    workspace="/s/data",
    agent_script="/a/agent.py",
    interpreter_script="/a/interpreter.py",
    agent_socket_dir="/s/ctl",
    skills="/s/skills",
    egress="/s/egress",
    binds=[("/usr", "/usr")],
    empty_file="/s/empty",
    passwd="/s/passwd",
    group="/s/group",
)


def _args(**kw: object):  # type: ignore[no-untyped-def]
    spec = SandboxSpec("cntr_x", 1 << 30, Limits(pids=77, cpus=1.5, nofile=99), **kw)  # type: ignore[arg-type]
    user = (1_879_049_192, 1_879_049_192)
    return create_args(spec, "sandboxd/host:t", PATHS, "/sbx-docker", "inst", load_profile(), user)


def test_every_control_is_explicit() -> None:
    a = _args()
    host = a.host
    assert host["network_mode"] == "none"
    # The tier for sandbox code (its work group), the agent's reserve on top.
    assert host["mem_limit"] == host["memswap_limit"] == (1 << 30) + AGENT_RESERVE_BYTES
    assert host["pids_limit"] == 77
    assert host["nano_cpus"] == 1_500_000_000
    assert host["cap_drop"] == ["ALL"]
    assert host["read_only"] is True and host["privileged"] is False
    assert host["cgroup_parent"] == "/sbx-docker" and host["cgroupns"] == "private"
    nnp, seccomp = host["security_opt"]
    assert nnp == "no-new-privileges"
    assert json.loads(seccomp.removeprefix("seccomp="))["defaultAction"] == "SCMP_ACT_ERRNO"
    assert {u["name"]: u["hard"] for u in host["ulimits"]} == {
        "nofile": 99,
        "fsize": 2 << 30,
        "core": 0,
    }
    assert "size=268435456" in host["tmpfs"]["/tmp"]
    assert a.raw_host["MaskedPaths"] == [*MASKED_PATHS, "/sys/fs/cgroup"]
    assert host["sysctls"]["kernel.shm_rmid_forced"] == "1"
    create = a.create
    # No user namespace: the sandbox's own host uid, named in its own /etc/passwd.
    assert create["user"] == "1879049192:1879049192"
    mounts = {m["Target"]: m["Source"] for m in host["mounts"]}
    assert (mounts["/etc/passwd"], mounts["/etc/group"]) == ("/s/passwd", "/s/group")
    assert create["command"] == AGENT_ARGV
    assert create["environment"]["SANDBOXD_AGENT_SOCKET"] == AGENT_SOCKET
    assert create["labels"] == {
        "sandboxd.managed": "1",
        "sandboxd.id": "cntr_x",
        "sandboxd.instance": "inst",
    }
    assert create["use_config_proxy"] is False


def test_mounts() -> None:
    mounts = {m["Target"]: m for m in _args().host["mounts"]}
    assert mounts["/mnt/data"]["ReadOnly"] is False
    assert mounts["/.sandboxd/sock"]["ReadOnly"] is False
    for target in ("/usr", "/mnt/skills", EGRESS_DIR, "/.sandboxd/agent.py", "/etc/resolv.conf"):
        assert mounts[target]["ReadOnly"] is True, target
    assert SYSTEM_CA_BUNDLE not in mounts
    with_bundle = {m["Target"]: m for m in _args(trust_bundle="/x/ca.pem").host["mounts"]}
    assert with_bundle[SYSTEM_CA_BUNDLE]["Source"] == "/x/ca.pem"
    assert with_bundle[SYSTEM_CA_BUNDLE]["ReadOnly"] is True
