"""One mount layout (sandbox/host/mounts.py), rendered by both backends: the oci bundle and the
docker create() arguments bind the same host paths at the same places, read-only alike."""

from __future__ import annotations

from sandbox.docker.container import create_args
from sandbox.host.mounts import HostPaths, Kind, mounts
from sandbox.oci.bundle import BundlePaths, build_config
from sandbox.spec import Limits, SandboxSpec

PATHS = HostPaths(
    workspace="/s/data",
    agent_script="/a/agent.py",
    interpreter_script="/a/interpreter.py",
    binds=[("/usr", "/usr")],
    skills="/s/skills",
    egress="/s/egress",
    agent_pycache="/p",
)
SPEC = SandboxSpec("cntr_x", 1 << 30, Limits())


def test_both_backends_bind_the_same_paths() -> None:
    config = build_config(SPEC, BundlePaths(rootfs="/r", host=PATHS), (100_000, 65_536), "/c", {})
    oci = [
        (m["source"], m["destination"], "ro" in m["options"])
        for m in config["mounts"]
        if m["type"] == "bind"
    ]
    args = create_args(SPEC, "img", PATHS, "/c", "inst", {}, (1, 1))
    docker = [(m["Source"], m["Target"], m["ReadOnly"]) for m in args.host["mounts"]]
    assert oci == docker
    assert ("/s/data", "/mnt/data", False) in docker


def test_docker_makes_the_standard_mounts_itself() -> None:
    layout = mounts(SPEC, PATHS)
    tmpfs = [m.destination for m in layout if m.kind is Kind.TMPFS and not m.standard]
    args = create_args(SPEC, "img", PATHS, "/c", "inst", {}, (1, 1))
    assert list(args.host["tmpfs"]) == tmpfs == ["/tmp", "/run"]
    config = build_config(SPEC, BundlePaths(rootfs="/r", host=PATHS), (100_000, 65_536), "/c", {})
    assert [m["destination"] for m in config["mounts"]] == [m.destination for m in layout]
