"""Shared output of the benchmarks: a plain table on stdout and a JSON file in benchmarks/results/."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from meshhook_rt_metrics.logs import redact

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict[str, Any]:
    import psutil

    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cpu_freq_mhz": getattr(psutil.cpu_freq(), "current", None),
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def paired_verdict(per_round: list[float], goal: float, *, at_most: bool) -> bool | None:
    """A goal judged over paired rounds by a one-sided sign test at 5 %: met when so few rounds miss it that
    a median on the goal would give as few by chance at most 5 % of the time, not met when as few meet it,
    and no verdict (None) otherwise: the rounds' noise then hides which side of the goal the figure is on.
    A median of noisy ratios alone flips its verdict from run to run; this says when a run can tell.
    ``at_most``: the goal is an upper bound (p99 ratio <= 1.02) rather than a lower one (kept >= 0.99)."""
    judged = [r for r in per_round if not math.isnan(r) and r != goal]  # a NaN round or a tie says neither
    n = len(judged)
    if n == 0:
        return None
    missed = sum(1 for r in judged if (r > goal if at_most else r < goal))

    def chance(k: int) -> float:  # P(at most k of n rounds on one side | a median on the goal)
        return sum(math.comb(n, i) for i in range(k + 1)) / (1 << n)

    if chance(missed) <= 0.05:
        return True
    if chance(n - missed) <= 0.05:
        return False
    return None


def verdict_text(met: bool | None) -> str:
    return {True: "met", False: "not met", None: "no verdict"}[met]


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers, *[[_fmt(c) for c in row] for row in rows]]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def write(name: str, command: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    # a benchmark's command names its database's URL (--db-url): the file keeps no password
    path.write_text(
        json.dumps({"command": redact(command), "environment": environment(), **payload}, indent=2) + "\n"
    )
    return path


def summary_row(
    figure: str,
    value: float,
    baseline: float | None,
    ratio: float | None,
    goal: str,
    met: bool | None,
    load: str,
    unit: str,
    spread: list[float] | None = None,
) -> dict[str, Any]:
    """One row of the summary table: the keys every benchmark's ``figures`` and benchmarks/summary.py share."""
    return {
        "figure": figure,
        "value": value,
        "baseline": baseline,
        "ratio": ratio,
        "goal": goal,
        "met": met,
        "load": load,
        "unit": unit,
        "ratio_spread": spread,
    }
