#!/usr/bin/env python3
"""Generate ``sandbox/seccomp.json`` (OCI ``linux.seccomp``) from moby's default profile.

    python3 scripts/gen_seccomp.py [INPUT] [OUTPUT]

INPUT is moby's ``profiles/seccomp/default.json`` (from a moby checkout or release; the
environment variable ``SANDBOXD_MOBY_SECCOMP`` names it when INPUT is left out); OUTPUT
defaults to ``sandbox/seccomp.json`` in the repository. The moby profile is flattened for the
sandbox (no capabilities at all, x86_64 and aarch64 hosts, kernel >= 6.x), then tightened
(the forbidden list below; SECURITY.md, checklist #5). The script fails loudly when the
result would allow anything on the forbidden list, or when the input has a shape it does not
understand.

Two runc/libseccomp facts shape the socket rules (runc 1.1.5, libseccomp 2.5.4):

- runc splits a rule whose conditions share an argument index into one rule per condition,
  i.e. it ORs them. ``arg0 != 16 && arg0 != 38 && arg0 != 40`` in one rule therefore allows
  every family. No rule here has two conditions on the same index.
- The kernel reads ``domain``/``protocol`` as ``int`` (the upper 32 bits of the register are
  ignored) while seccomp compares all 64 bits, so ``!=``/``>`` checks can be bypassed with
  upper bits set. Every socket condition is ``(arg & 0xffffffff) == value``, i.e. exactly the
  value the kernel acts on. Allowed families are listed as aligned blocks.

32-bit x86 (``SCMP_ARCH_X86``) is deliberately not in ``architectures``: for that ABI
libseccomp 2.5 turns every conditional ``socket`` rule into an *unconditional*
``socketcall(SYS_SOCKET, ...)`` rule (socketcall's arguments sit behind a pointer), which
reopens AF_VSOCK/AF_ALG/netlink to any process issuing ``int 0x80``. Without the arch, i386
system calls never reach an allow rule.
"""

import argparse
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final

Rule = dict[str, Any]

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
INPUT_ENV: Final = "SANDBOXD_MOBY_SECCOMP"
DEFAULT_OUTPUT: Final = REPO_ROOT / "sandbox" / "seccomp.json"

# Moby's names for architectures in `includes/excludes.arches`, mapped to libseccomp names.
MOBY_ARCHES: Final = {
    "amd64": "SCMP_ARCH_X86_64",
    "x86": "SCMP_ARCH_X86",
    "x32": "SCMP_ARCH_X32",
    "arm64": "SCMP_ARCH_AARCH64",
    "arm": "SCMP_ARCH_ARM",
    "ppc64le": "SCMP_ARCH_PPC64LE",
    "s390": "SCMP_ARCH_S390",
    "s390x": "SCMP_ARCH_S390X",
    "riscv64": "SCMP_ARCH_RISCV64",
    "loong64": "SCMP_ARCH_LOONGARCH64",
}
HOST_ARCHES: Final = ("SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64")
# See the module docstring: i386 cannot be filtered on socket arguments by libseccomp 2.5.
DROPPED_ARCHES: Final = frozenset({"SCMP_ARCH_X86"})

EPERM: Final = 1
ENOSYS: Final = 38
ERRNO: Final = "SCMP_ACT_ERRNO"
ALLOW: Final = "SCMP_ACT_ALLOW"

# Removed from every allow rule and listed in an explicit EPERM rule (SECURITY.md, checklist).
# runc skips rules equal to the default action, so what denies them is their absence from
# every allow rule; the explicit rule documents intent and is what the tests look for.
DENY_EPERM: Final = (
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "ptrace",  # moby allows it on kernels >= 4.8; the agent must not be traceable
    "name_to_handle_at",  # handle-based file access, paired with open_by_handle_at
    "socketcall",  # multiplexer; its arguments are behind a pointer, so unfilterable
)
# Replaced by our own rules below.
REPLACED: Final = frozenset({"clone3", "socket"})

# Must never appear in an allow rule (checked on the final profile).
FORBIDDEN: Final = frozenset(
    {
        *DENY_EPERM,
        "clone3",
        "unshare",
        "setns",
        "mount",
        "umount",
        "umount2",
        "pivot_root",
        "chroot",
        "fsopen",
        "fsmount",
        "fsconfig",
        "fspick",
        "move_mount",
        "open_tree",
        "mount_setattr",
        "bpf",
        "perf_event_open",
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
        "clock_settime",
        "clock_settime64",
        "settimeofday",
        "stime",
        "acct",
        "swapon",
        "swapoff",
        "reboot",
        "open_by_handle_at",
        "lookup_dcookie",
        "quotactl",
        "quotactl_fd",
        "syslog",
        "vhangup",
        "iopl",
        "ioperm",
        "kcmp",
        "pidfd_getfd",
    }
)
RULE_KEYS: Final = frozenset(
    {"names", "action", "args", "errnoRet", "comment", "includes", "excludes"}
)
# Allowed only with argument filters (moby's flag/persona filtering for the no-cap case).
ARGS_REQUIRED: Final = frozenset({"clone", "personality", "socket"})

AF_NETLINK: Final = 16
NETLINK_ROUTE: Final = 0
AF_MAX: Final = 46  # Linux 6.x (AF_MCTP = 45); the kernel rejects families >= AF_MAX
DENIED_FAMILIES: Final = frozenset({38, 40})  # AF_ALG, AF_VSOCK
INT_MASK: Final = 0xFFFF_FFFF  # the kernel reads these arguments as C int


class ProfileError(Exception):
    """The input is not understood, or the output would break a rule of ours."""


def int_eq(index: int, value: int, size: int = 1) -> dict[str, Any]:
    """Condition: the low 32 bits of argument `index` lie in [value, value + size)."""
    if size & (size - 1) or value % size:
        raise ProfileError(f"block {value}+{size} is not an aligned power of two")
    mask = INT_MASK & ~(size - 1)
    return {"index": index, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"}


def aligned_blocks(values: Iterable[int]) -> Iterator[tuple[int, int]]:
    """Split a set of non-negative ints into maximal aligned power-of-two blocks (start, size)."""
    remaining = sorted(set(values))
    wanted = set(remaining)
    while remaining:
        start = remaining[0]
        size = 1
        while start % (size * 2) == 0 and all(v in wanted for v in range(start, start + size * 2)):
            size *= 2
        yield start, size
        remaining = [v for v in remaining if v >= start + size]


def socket_rules() -> list[Rule]:
    """socket(): any family but AF_ALG/AF_VSOCK; AF_NETLINK only with NETLINK_ROUTE."""
    families = set(range(AF_MAX)) - DENIED_FAMILIES - {AF_NETLINK}
    rules: list[Rule] = [
        {"names": ["socket"], "action": ALLOW, "args": [int_eq(0, start, size)]}
        for start, size in aligned_blocks(families)
    ]
    rules.append(
        {
            "names": ["socket"],
            "action": ALLOW,
            "args": [int_eq(0, AF_NETLINK), int_eq(2, NETLINK_ROUTE)],
        }
    )
    return rules


def architectures(arch_map: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for entry in arch_map:
        if entry["architecture"] in HOST_ARCHES:
            out += [entry["architecture"], *(entry.get("subArchitectures") or [])]
    missing = set(HOST_ARCHES) - set(out)
    if missing:
        raise ProfileError(f"archMap lacks {sorted(missing)}")
    return [arch for arch in out if arch not in DROPPED_ARCHES]


def applies(rule: Rule, arches: frozenset[str]) -> bool:
    """Whether a moby rule applies to a process with no capabilities on one of `arches`."""
    includes: dict[str, Any] = rule.get("includes") or {}
    excludes: dict[str, Any] = rule.get("excludes") or {}
    for cond in (includes, excludes):
        unknown = set(cond) - {"caps", "arches", "minKernel"}
        if unknown:
            raise ProfileError(f"unknown condition {sorted(unknown)} in {rule['names']}")
        for name in cond.get("arches") or []:
            if name not in MOBY_ARCHES:
                raise ProfileError(f"unknown moby arch {name!r} in {rule['names']}")
    if "minKernel" in excludes:
        raise ProfileError(f"excludes.minKernel is not handled ({rule['names']})")
    if includes.get("caps"):
        return False  # we grant no capabilities; excludes.caps never match either
    if includes.get("arches") and not arches & set(includes["arches"]):
        return False
    excluded = arches & set(excludes.get("arches") or [])
    if excluded and excluded != arches:
        # OCI rules cannot be limited to some architectures of a profile.
        raise ProfileError(f"{rule['names']} is excluded on only some of {sorted(arches)}")
    # includes.minKernel: the host kernel (6.x) is newer than any moby threshold.
    return not excluded


def flatten(moby: dict[str, Any], scmp_arches: list[str]) -> list[Rule]:
    arches = frozenset(name for name, arch in MOBY_ARCHES.items() if arch in scmp_arches)
    rules: list[Rule] = []
    for rule in moby["syscalls"]:
        unknown = set(rule) - RULE_KEYS
        if unknown:
            raise ProfileError(f"unknown rule key(s) {sorted(unknown)} in {rule['names']}")
        if not applies(rule, arches):
            continue
        names = [n for n in rule["names"] if n not in REPLACED and n not in DENY_EPERM]
        if not names:
            continue
        out: Rule = {"names": names, "action": rule["action"]}
        if "errnoRet" in rule:
            out["errnoRet"] = rule["errnoRet"]
        if rule.get("args"):
            out["args"] = rule["args"]
        rules.append(out)
    rules += socket_rules()
    rules.append({"names": ["clone3"], "action": ERRNO, "errnoRet": ENOSYS})
    rules.append({"names": list(DENY_EPERM), "action": ERRNO, "errnoRet": EPERM})
    return rules


def check(profile: dict[str, Any]) -> None:
    """Fail loudly if the profile allows anything it must not."""
    if profile["defaultAction"] != ERRNO or profile["defaultErrnoRet"] != EPERM:
        raise ProfileError("default action must be ERRNO(EPERM)")
    if DROPPED_ARCHES & set(profile["architectures"]):
        raise ProfileError(f"{sorted(DROPPED_ARCHES)} would reopen socket() via socketcall")
    seen: dict[str, str] = {}
    for rule in profile["syscalls"]:
        for name in rule["names"]:
            action = rule["action"] + str(rule.get("errnoRet", ""))
            if seen.setdefault(name, action) != action:
                raise ProfileError(f"{name} has conflicting actions")
            if rule["action"] == ALLOW and name in FORBIDDEN:
                raise ProfileError(f"{name} would be allowed")
            if rule["action"] == ALLOW and name in ARGS_REQUIRED and not rule.get("args"):
                raise ProfileError(f"{name} would be allowed without argument filters")
        indexes = [arg["index"] for arg in rule.get("args") or []]
        if len(indexes) != len(set(indexes)):
            raise ProfileError(f"{rule['names']}: runc ORs conditions on the same argument")
    if seen.get("clone3") != f"{ERRNO}{ENOSYS}":
        raise ProfileError("clone3 must fail with ENOSYS")


def generate(moby: dict[str, Any]) -> dict[str, Any]:
    if moby.get("defaultAction") != ERRNO or moby.get("defaultErrnoRet") != EPERM:
        raise ProfileError("expected moby's default action ERRNO(EPERM)")
    arches = architectures(moby["archMap"])
    profile = {
        "defaultAction": ERRNO,
        "defaultErrnoRet": EPERM,
        "architectures": arches,
        "syscalls": flatten(moby, arches),
    }
    check(profile)
    return profile


def render(profile: dict[str, Any]) -> str:
    return json.dumps(profile, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("input", nargs="?", type=Path, default=os.environ.get(INPUT_ENV))
    parser.add_argument("output", nargs="?", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.input is None:
        parser.error(f"INPUT (moby's profiles/seccomp/default.json) or ${INPUT_ENV} is needed")
    try:
        profile = generate(json.loads(args.input.read_text()))
    except (OSError, ValueError, ProfileError) as exc:
        print(f"gen_seccomp: {exc}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
