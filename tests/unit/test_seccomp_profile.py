"""Structural checks on sandbox/seccomp.json, the sandbox's OCI seccomp profile.

The runtime behaviour (errnos seen by a process under runc) is checked by hand with a probe;
see scripts/gen_seccomp.py for why the socket rules look the way they do.
"""

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROFILE_PATH = ROOT / "sandbox" / "seccomp.json"
# moby's profiles/seccomp/default.json, which the profile is generated from (not shipped).
REFERENCE = Path(os.environ.get("SANDBOXD_MOBY_SECCOMP", "/nonexistent"))

DENY_EPERM = {
    *("io_uring_setup", "io_uring_enter", "io_uring_register", "userfaultfd"),
    *("keyctl", "add_key", "request_key", "ptrace"),
}
NEVER_ALLOWED = DENY_EPERM | {
    *("clone3", "unshare", "setns", "mount", "umount2", "pivot_root", "bpf", "perf_event_open"),
    *("kexec_load", "init_module", "finit_module", "delete_module", "clock_settime"),
    *("settimeofday", "acct", "swapon", "reboot", "open_by_handle_at", "name_to_handle_at"),
    *("lookup_dcookie", "quotactl", "syslog", "vhangup", "iopl", "ioperm", "socketcall"),
}
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_ALG, AF_VSOCK = 1, 2, 10, 16, 38, 40
U64 = (1 << 64) - 1


def load() -> dict[str, Any]:
    profile: dict[str, Any] = json.loads(PROFILE_PATH.read_text())
    return profile


def rules(action: str, name: str) -> list[dict[str, Any]]:
    return [r for r in load()["syscalls"] if r["action"] == action and name in r["names"]]


def arg_ok(cond: dict[str, Any], args: tuple[int, ...]) -> bool:
    """libseccomp's comparison of one (64-bit, unsigned) syscall argument."""
    arg: int = args[cond["index"]] & U64
    value: int = cond["value"]
    match cond["op"]:
        case "SCMP_CMP_MASKED_EQ":
            return arg & value == int(cond.get("valueTwo", 0))
        case "SCMP_CMP_EQ":
            return arg == value
        case "SCMP_CMP_NE":
            return arg != value
        case "SCMP_CMP_LT":
            return arg < value
        case "SCMP_CMP_LE":
            return arg <= value
        case "SCMP_CMP_GT":
            return arg > value
        case "SCMP_CMP_GE":
            return arg >= value
    raise AssertionError(f"unknown op {cond['op']}")


def socket_allowed(*args: int) -> bool:
    """Rules are ORed and the conditions of a rule ANDed, except that runc ORs a rule's
    conditions when two of them compare the same argument."""
    args += (0,) * (6 - len(args))
    for rule in rules("SCMP_ACT_ALLOW", "socket"):
        conds = rule.get("args", [])
        if len({c["index"] for c in conds}) < len(conds):
            if any(arg_ok(c, args) for c in conds):
                return True
        elif all(arg_ok(c, args) for c in conds):
            return True
    return False


def test_default_action_is_eperm() -> None:
    profile = load()
    assert (profile["defaultAction"], profile["defaultErrnoRet"]) == ("SCMP_ACT_ERRNO", 1)


def test_architectures() -> None:
    arches = load()["architectures"]
    assert {"SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"} <= set(arches)
    # libseccomp 2.5 turns conditional socket rules into unconditional i386 socketcall rules
    assert "SCMP_ARCH_X86" not in arches


def test_forbidden_syscalls_are_never_allowed() -> None:
    allowed = {n for r in load()["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]}
    assert not allowed & NEVER_ALLOWED


def test_explicit_denies() -> None:
    denied = {n for r in load()["syscalls"] if r.get("errnoRet") == 1 for n in r["names"]}
    assert denied >= DENY_EPERM
    assert [r.get("errnoRet") for r in rules("SCMP_ACT_ERRNO", "clone3")] == [38]


@pytest.mark.parametrize("name", ["clone", "personality", "socket"])
def test_conditional_allows_have_filters(name: str) -> None:
    assert rules("SCMP_ACT_ALLOW", name)
    assert all(r.get("args") for r in rules("SCMP_ACT_ALLOW", name))


def test_no_rule_compares_one_argument_twice() -> None:
    # runc turns such a rule into one rule per condition, i.e. ORs them
    for rule in load()["syscalls"]:
        indexes = [a["index"] for a in rule.get("args", [])]
        assert len(indexes) == len(set(indexes)), rule


@pytest.mark.parametrize(
    ("domain", "type_", "protocol", "allowed"),
    [
        (AF_UNIX, 1, 0, True),
        (AF_INET, 1, 0, True),
        (AF_INET, 2, 0, True),
        (AF_INET6, 1 | 0x80000, 0, True),
        (AF_NETLINK, 3, 0, True),
        (AF_NETLINK, 3, 9, False),  # NETLINK_AUDIT
        (AF_NETLINK, 3, 15, False),  # NETLINK_KOBJECT_UEVENT
        (AF_ALG, 5, 0, False),
        (AF_VSOCK, 1, 0, False),
        ((1 << 32) | AF_VSOCK, 1, 0, False),  # the kernel ignores the upper 32 bits
        (AF_NETLINK, 3, (1 << 32) | 9, False),
    ],
)
def test_socket_samples(domain: int, type_: int, protocol: int, allowed: bool) -> None:
    assert socket_allowed(domain, type_, protocol) is allowed


def test_socket_never_allows_what_the_kernel_would_see_as_denied() -> None:
    for high in (0, 1 << 32, 0xFFFF_FFFF << 32):
        for domain in range(64):
            for protocol in (0, 9, 15):
                if socket_allowed(high | domain, 1, high | protocol):
                    assert domain not in (AF_ALG, AF_VSOCK)
                    assert domain != AF_NETLINK or protocol == 0


def test_profile_is_generated() -> None:
    if not REFERENCE.exists():
        pytest.skip("set SANDBOXD_MOBY_SECCOMP to moby's default seccomp profile")
    spec = importlib.util.spec_from_file_location("gen_seccomp", ROOT / "scripts/gen_seccomp.py")
    assert spec
    assert spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    expected = gen.render(gen.generate(json.loads(REFERENCE.read_text())))
    assert PROFILE_PATH.read_text() == expected, "run: python3 scripts/gen_seccomp.py"
