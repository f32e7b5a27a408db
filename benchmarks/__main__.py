"""Run the benchmarks and write ``docs/benchmarks.md``.

    python -m benchmarks                 # everything (about 10-15 minutes on 2 cores)
    python -m benchmarks --quick         # smaller sizes, for a quick look
    python -m benchmarks --only types    # one suite: types, replica, log, policy, inference, control, kafka
    python -m benchmarks --no-write      # print instead of writing the docs page

With --only, only those suites' sections of docs/benchmarks.md are replaced; the others
(and the page header, which describes the run that produced them) are kept.

Every number is a median of repeated runs; comparisons are made inside one run.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

from . import bench_control, bench_inference, bench_kafka, bench_policy, bench_replica, bench_types
from ._harness import git_rev, machine, progress

ROOT = Path(__file__).resolve().parent.parent
SUITES = ("types", "replica", "log", "policy", "inference", "control", "kafka")


def _log_suite(quick: bool) -> str:
    args = [sys.executable, str(ROOT / "benchmarks" / "bench_log.py")]
    if quick:
        args.append("--quick")
    out = subprocess.run(args, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    # nest bench_log.py's own headings under this page's "Log layer" section
    return "\n".join("##" + line if line.startswith("#") else line for line in out.splitlines())


def _splice(page: str, sections: list[str]) -> str:
    """``page`` with each ``## Title`` section replaced by the new one of that title
    (appended if the page has none)."""
    parts = re.split(r"(?m)^(?=## )", page)
    for new in sections:
        title = new.split("\n", 1)[0]
        hit = [i for i, p in enumerate(parts) if p.split("\n", 1)[0] == title]
        if hit:
            parts[hit[0]] = new.rstrip("\n") + "\n\n"
        else:
            parts[-1] = parts[-1].rstrip("\n") + "\n\n"
            parts.append(new.rstrip("\n") + "\n")
    return "".join(parts).rstrip("\n") + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes and fewer repetitions")
    ap.add_argument("--only", choices=SUITES, action="append", help="run only this suite (repeatable)")
    ap.add_argument("--no-write", action="store_true", help="print the report instead of writing docs/benchmarks.md")
    args = ap.parse_args()
    suites = args.only or list(SUITES)
    started = time.time()
    sections = []
    if "types" in suites:
        sections.append("## Types\n\n" + bench_types.run(args.quick))
    if "replica" in suites:
        sections.append("## Replica\n" + bench_replica.run(args.quick))
    if "log" in suites:
        progress("log: bench_log.py")
        sections.append("## Log layer\n\n" + _log_suite(args.quick))
    if "policy" in suites:
        sections.append("## Consistency levels\n\n" + bench_policy.run(args.quick))
    if "inference" in suites:
        sections.append("## Inference and lineage\n\n" + bench_inference.run(args.quick))
    if "control" in suites:
        sections.append("## Control at fleet scale\n\n" + bench_control.run(args.quick))
    if "kafka" in suites:
        sections.append("## Kafka\n\n" + bench_kafka.run(args.quick))
    cmd = "python -m benchmarks" + (" --quick" if args.quick else "") + "".join(f" --only {s}" for s in args.only or [])
    report = "\n".join([
        "# Benchmarks",
        "",
        f"Command: `{cmd}` (commit `{git_rev()}`, {time.strftime('%Y-%m-%d')}, "
        f"{(time.time() - started) / 60:.1f} min).",
        "",
        f"Machine: {machine()}.",
        "",
        "Medians of repeated runs; every ratio compares numbers taken in the same run. The machine is a "
        "shared 2-core VM, so absolute numbers move between runs by tens of percent; the ratios are what "
        "to read.",
        "",
        "\n\n".join(sections),
        "",
    ])
    if args.no_write:
        print(report)
    else:
        out = ROOT / "docs" / "benchmarks.md"
        if args.only and out.exists():
            report = _splice(out.read_text(), sections)
        out.write_text(report)
        progress(f"wrote {out}")


if __name__ == "__main__":
    main()
