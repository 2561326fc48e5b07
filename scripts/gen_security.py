#!/usr/bin/env python3
"""Regenerate SECURITY.md's result tables from the security suite's JSON lines.

    .venv/bin/python scripts/gen_security.py RESULTS.jsonl SECURITY.md [--command CMD]

RESULTS.jsonl is what tests/security_report.py (a pytest plugin) appends when
SANDBOXD_SECURITY_RESULTS names it: one `session` line per pytest run and one `case` line per
test case of tests/adversarial/, tests/egress/, tests/runtime/ hardening/isolation/limits and
the host-boundary modules.
Every section between `<!-- generated:NAME -->` and `<!-- /generated:NAME -->` is replaced;
everything outside the markers (threat model, controls, known limits) is left as it is.

Exit 1, leaving SECURITY.md untouched, if any case FAILED or there are no results; exit 2 on
a usage error (a missing file, a marker without its end). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

Row = dict[str, Any]

SECTIONS = ("header", "attacks", "runtime", "host", "egress", "faults")
# Modules of tests/adversarial/ whose cases are faults and load, not attacks.
FAULT_MODULES = ("test_faults.py", "test_load.py")
PROBE_TEST = ("test_attacks.py", "test_attack")
# Checks of the suite itself, listed with the attacks but not counted as attacks.
NOT_ATTACKS = {("test_attacks.py", "test_probe_covers_exactly_the_expected_attacks")}
MARKER = re.compile(
    r"(?P<open><!-- generated:(?P<name>[a-z]+) -->\n)(?P<body>.*?)"
    r"(?P<close><!-- /generated:(?P=name) -->)",
    re.S,
)


REQUIRED = ("suite", "module", "test", "nodeid", "case", "backend", "outcome")
OPTIONAL: dict[str, Any] = {
    "description": "",
    "expected": "",
    "observed": "",
    "duration_s": 0.0,
    "figures": {},
}


class UsageError(Exception):
    pass


# ------------------------------------------------------------------------------ reading


def read_rows(path: Path) -> tuple[list[Row], list[Row]]:
    """(sessions, cases); a case seen twice (same node, case and backend) keeps its last row."""
    sessions: list[Row] = []
    cases: dict[tuple[str, str, str], Row] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{number}: not JSON: {exc}") from None
        if row.get("kind") == "session":
            sessions.append(row)
        elif row.get("kind") == "case":
            missing = [k for k in REQUIRED if k not in row]
            if missing:
                raise UsageError(f"{path}:{number}: a case without {', '.join(missing)}")
            for key, default in OPTIONAL.items():
                row.setdefault(key, default)
            cases[(row["nodeid"], row["case"], row["backend"])] = row
    return sessions, list(cases.values())


# ------------------------------------------------------------------------------ rendering


def cell(value: object) -> str:
    text = " ".join(str(value).split())
    return text.replace("|", "\\|")


def code(value: object) -> str:
    text = cell(value)
    return f"`{text}`" if text else ""


def table(header: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def backends_of(rows: Iterable[Row]) -> list[str]:
    found = {str(r["backend"]) for r in rows}
    return sorted(found, key=lambda b: (b != "oci", b))


def tried(rows: Iterable[Row]) -> list[Row]:
    return [r for r in rows if r["outcome"] != "skipped"]


def held(rows: Iterable[Row]) -> list[Row]:
    return [r for r in rows if r["outcome"] == "held"]


def result(rows: list[Row]) -> str:
    """One table cell for the rows of one test on one backend."""
    if not rows:
        return "—"
    failed = [r for r in rows if r["outcome"] not in ("held", "skipped")]
    if failed:
        names = ", ".join(sorted(str(r["case"]).split("[", 1)[-1].rstrip("]") for r in failed))
        label = (
            "**FAILED**" if any(r["outcome"] == "FAILED" for r in failed) else "known bug (xfail)"
        )
        return f"{label} {len(failed)}/{len(rows)}: {cell(names)}"
    if all(r["outcome"] == "skipped" for r in rows):
        return "skipped: " + cell(rows[0].get("observed") or "")
    n_held = len(held(rows))
    return "held" if len(rows) == 1 else f"held {n_held}/{len(rows)}"


def grouped(rows: Iterable[Row]) -> dict[tuple[str, str], list[Row]]:
    """Rows by (module, test), in first-seen order."""
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        groups[(r["module"], r["test"])].append(r)
    return groups


def params_of(rows: list[Row]) -> str:
    ids = sorted({str(r["case"]).split("[", 1)[1].rstrip("]") for r in rows if "[" in r["case"]})
    if not ids:
        return ""
    shown = ", ".join(code(i) for i in ids[:8])
    return shown + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")


def per_test_table(rows: list[Row], backends: list[str], first: str = "Test") -> str:
    body = []
    for (module, test), group in grouped(rows).items():
        what = cell(group[0]["description"])
        params = params_of(group)
        if params:
            what += f" ({len({r['case'] for r in group})} cases: {params})"
        results = [result([r for r in group if r["backend"] == b]) for b in backends]
        body.append([f"`{module}::{test}`", what, *results])
    return table([first, "What it checks", *backends], body)


def counts_line(rows: list[Row], backends: list[str], noun: str) -> str:
    parts = []
    for b in backends:
        mine = [r for r in rows if r["backend"] == b]
        parts.append(f"**{b}**: {len(tried(mine))} {noun} tried, {len(held(mine))} held")
        skipped = len(mine) - len(tried(mine))
        if skipped:
            parts[-1] += f" ({skipped} skipped)"
    return "; ".join(parts) + "."


def render_attacks(cases: list[Row]) -> str:
    adversarial = [r for r in cases if r["suite"] == "adversarial"]
    attacks = [r for r in adversarial if r["module"] not in FAULT_MODULES]
    probe = [r for r in attacks if (r["module"], r["test"]) == PROBE_TEST]
    others = [r for r in attacks if (r["module"], r["test"]) != PROBE_TEST]
    backends = backends_of(attacks)
    counted = [r for r in attacks if (r["module"], r["test"]) not in NOT_ATTACKS]
    out = [counts_line(counted, backends, "attacks")]
    if probe:
        out.append("")
        out.append(
            f"In-sandbox attacks run by the probe (`tests/adversarial/probe.py`, uid 1000, stdlib"
            f" only) in one sandbox per backend; each is `test_attacks.py::test_attack[<case>]`"
            f" ({counts_line(probe, backends_of(probe), 'probe attacks')[:-1]}):"
        )
        out.append("")
        by_case: dict[str, list[Row]] = defaultdict(list)
        for r in probe:
            by_case[str(r["case"])].append(r)
        body = []
        for case, group in sorted(by_case.items()):
            results = []
            for b in backends:
                mine = [r for r in group if r["backend"] == b]
                if not mine:
                    results.append("—")
                elif mine[0]["outcome"] == "held":
                    results.append(f"held ({code(mine[0]['observed'])})")
                elif mine[0]["outcome"] == "skipped":
                    results.append("skipped")
                else:
                    results.append(f"**{mine[0]['outcome']}** ({code(mine[0]['observed'])})")
            body.append(
                [f"`{case}`", cell(group[0]["description"]), code(group[0]["expected"]), *results]
            )
        out.append(table(["Case", "What it tries", "Expected", *backends], body))
    if others:
        out.append("")
        out.append(
            "The other attacks, each its own test (the API ones against a daemon of that backend):"
        )
        out.append("")
        out.append(per_test_table(others, backends))
    return "\n".join(out)


def render_runtime(cases: list[Row]) -> str:
    rows = [r for r in cases if r["suite"] == "runtime"]
    if not rows:
        return "No results."
    backends = backends_of(rows)
    return "\n".join(
        [counts_line(rows, backends, "checks"), "", per_test_table(rows, backends, "Check")]
    )


def render_host(cases: list[Row]) -> str:
    rows = [r for r in cases if r["suite"] == "host"]
    if not rows:
        return "No results."
    backends = backends_of(rows)
    return "\n".join(
        [counts_line(rows, backends, "checks"), "", per_test_table(rows, backends, "Check")]
    )


def egress_numbers(row: Row) -> list[int]:
    """Attack cases of docs/egress.md a test covers: test_07_... or "Cases 18 and 24" in its doc."""
    found = [int(m) for m in re.findall(r"^test_(\d+)", str(row["test"]))]
    doc = re.search(r"\bCases? ((?:\d+(?:, | and )?)+)", str(row["description"]))
    if doc:
        found += [int(n) for n in re.findall(r"\d+", doc.group(1))]
    return sorted(set(found))


def render_egress(cases: list[Row]) -> str:
    rows = [r for r in cases if r["suite"] == "egress"]
    if not rows:
        return "No results."
    numbers = sorted({n for r in rows for n in egress_numbers(r)})
    held_numbers = sorted(
        {n for r in rows for n in egress_numbers(r)}
        - {n for r in rows if r["outcome"] != "held" for n in egress_numbers(r)}
    )
    by_backend = []
    for b in backends_of(rows):
        mine = [r for r in rows if r["backend"] == b]
        by_backend.append(f"**{b}**: {len(tried(mine))} tried, {len(held(mine))} held")
    out = [
        f"{len(tried(rows))} egress cases tried, {len(held(rows))} held ({'; '.join(by_backend)})."
        f" Attack cases of docs/egress.md covered: {len(numbers)} ({', '.join(map(str, numbers))}),"
        f" all of whose cases held: {len(held_numbers)}."
        " Backend `proxy`: the proxy process alone, reached through a sandbox's egress socket"
        " as the agent would; otherwise the backend of the real daemon the case ran against.",
        "",
    ]
    body = []
    for (module, test), group in sorted(
        grouped(rows).items(), key=lambda kv: (egress_numbers(kv[1][0]) or [99], kv[0])
    ):
        what = cell(group[0]["description"])
        params = params_of(group)
        if params:
            what += f" ({len({r['case'] for r in group})} cases: {params})"
        number = ", ".join(map(str, egress_numbers(group[0]))) or "—"
        backend = ", ".join(backends_of(group))
        body.append([number, f"`{module}::{test}`", what, backend, result(group)])
    out.append(table(["Case #", "Test", "What it checks", "Backend", "Result"], body))
    return "\n".join(out)


def figures_of(row: Row) -> str:
    figures = dict(row.get("figures") or {})
    output = figures.pop("output", "")
    parts = [f"{k}={v}" for k, v in sorted(figures.items())]
    if output:
        parts.append(str(output))
    return cell("; ".join(parts))


def render_faults(cases: list[Row]) -> str:
    rows = [
        r
        for r in cases
        if (r["suite"] == "adversarial" and r["module"] in FAULT_MODULES) or figures_of(r)
    ]
    if not rows:
        return "No results."
    body = []
    for r in sorted(rows, key=lambda r: (r["module"] not in FAULT_MODULES, r["module"])):
        body.append(
            [
                f"`{r['module']}::{cell(r['case'])}`",
                cell(r["description"]),
                r["backend"],
                result([r]),
                f"{r['duration_s']:.1f} s",
                figures_of(r) or "—",
            ]
        )
    faults = [r for r in rows if r["module"] == "test_faults.py"]
    load = [r for r in rows if r["module"] == "test_load.py"]
    head = (
        f"{len(tried(faults))} faults injected, {len(held(faults))} held; {len(tried(load))} load"
        f" tests, {len(held(load))} held. Figures are what the tests measured in this run."
    )
    return "\n".join(
        [head, "", table(["Test", "What it checks", "Backend", "Result", "Took", "Figures"], body)]
    )


def describe_command(sessions: list[Row]) -> str:
    commands = []
    for s in sessions:
        command = "`" + shlex.join(["pytest", *(s.get("args") or [])]) + "`"
        if s.get("private_netns"):
            command += " (in a private network namespace)"
        commands.append(command)
    return " then ".join(commands) if commands else "unknown"


def git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def git_commit(cwd: Path, document: Path) -> str:
    """HEAD's short hash, marked when tracked files (but the document) had changes."""
    commit = git(cwd, "rev-parse", "--short", "HEAD")
    if not commit:
        return "`unknown`"
    exclude = f":(exclude){document.resolve()}"
    dirty = git(cwd, "status", "--porcelain", "--untracked-files=no", "--", ":/", exclude)
    return f"`{commit}`" + (" (with uncommitted changes)" if dirty else "")


def render_header(sessions: list[Row], cases: list[Row], command: str, commit: str) -> str:
    host = sessions[0] if sessions else {}
    date = time.strftime("%Y-%m-%d", time.gmtime())
    machine = ""
    if host:
        machine = (
            f" on {host.get('cpus')} CPUs, {host.get('mem_gib')} GiB, kernel"
            f" {host.get('kernel')}, Python {host.get('python')}"
        )
    counts: dict[str, int] = defaultdict(int)
    for r in cases:
        counts[r["outcome"]] += 1
    summary = ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
    return (
        f"_Generated {date} from commit {commit} by `scripts/gen_security.py` from the results"
        f" of {command}{machine}: {len(cases)} cases, {summary}. Do not edit between the"
        " `generated` markers; re-run `scripts/test`._"
    )


RENDERERS: dict[str, Callable[[list[Row]], str]] = {
    "attacks": render_attacks,
    "runtime": render_runtime,
    "host": render_host,
    "egress": render_egress,
    "faults": render_faults,
}


def regenerate(
    document: str, sessions: list[Row], cases: list[Row], command: str, commit: str
) -> str:
    seen = {m.group("name") for m in MARKER.finditer(document)}
    for name in re.findall(r"<!-- generated:([a-z]+) -->", document):
        if name not in seen:
            raise UsageError(f"marker generated:{name} has no <!-- /generated:{name} -->")
    unknown = seen - set(SECTIONS)
    if unknown:
        raise UsageError(f"unknown generated sections: {sorted(unknown)}")

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name == "header":
            body = render_header(sessions, cases, command, commit)
        else:
            body = RENDERERS[name](cases)
        return f"{match.group('open')}{body}\n{match.group('close')}"

    return MARKER.sub(replace, document)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("results", type=Path, help="JSON lines from tests/security_report.py")
    parser.add_argument("document", type=Path, help="SECURITY.md, rewritten in place")
    parser.add_argument("--command", help="how the results were produced (default: from them)")
    args = parser.parse_args(argv)
    try:
        if not args.results.exists():
            raise UsageError(f"{args.results}: no such file")
        sessions, cases = read_rows(args.results)
        document = args.document.read_text()
        if not cases:
            print(f"gen_security: {args.results} has no results", file=sys.stderr)
            return 1
        failed = [r for r in cases if r["outcome"] == "FAILED"]
        if failed:
            for r in failed:
                print(f"gen_security: FAILED {r['nodeid']} ({r['case']})", file=sys.stderr)
            print(
                f"gen_security: {len(failed)} FAILED; {args.document} left as it was",
                file=sys.stderr,
            )
            return 1
        command = f"`{args.command}`" if args.command else describe_command(sessions)
        commit = git_commit(Path(__file__).resolve().parent, args.document)
        updated = regenerate(document, sessions, cases, command, commit)
    except (UsageError, OSError) as exc:
        print(f"gen_security: {exc}", file=sys.stderr)
        return 2
    if updated != document:
        args.document.write_text(updated)
    print(f"gen_security: {len(cases)} cases -> {args.document}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
