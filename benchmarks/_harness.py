"""Shared benchmark machinery: repeat, take medians, describe the machine.

Timings on a shared 2-core machine are noisy, so every number is the median of several
repetitions, and each comparison is made within one run (ratios against peers measured
moments apart), never against a number from another day.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any


@dataclass
class Result:
    name: str
    ops: int
    seconds: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.median_s


def measure(name: str, fn: Callable[[], int], *, repeat: int = 5, warmup: int = 1) -> Result:
    """Run ``fn`` (which returns how many ops it did) ``repeat`` times; keep every time."""
    for _ in range(warmup):
        fn()
    res = Result(name, 0)
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            t = time.perf_counter()
            n = fn()
            res.seconds.append(time.perf_counter() - t)
        finally:
            gc.enable()
        res.ops = n
    return res


def measure_interleaved(fns: dict[str, Callable[[], int]], *, repeat: int = 5,
                        warmup: int = 1) -> dict[str, Result]:
    """:func:`measure` for several systems, one run of each per round, so that a noisy
    stretch of the machine hits them all alike (the ratios are what the pages quote)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out = {name: Result(name, 0) for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            gc.collect()
            gc.disable()
            try:
                t = time.perf_counter()
                n = fn()
                out[name].seconds.append(time.perf_counter() - t)
            finally:
                gc.enable()
            out[name].ops = n
    return out


def fmt_rate(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k"
    return f"{x:.0f}"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    versions = []
    for pkg in ("crdtsync", "pycrdt", "loro", "msgpack"):
        try:
            versions.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    return (f"{cpu}, {os.cpu_count()} cores{mem}; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}; " + ", ".join(versions))


def git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def table(columns: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
