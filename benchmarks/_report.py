"""Shared output of the benchmarks: a plain table on stdout and a JSON file in benchmarks/results/."""

from __future__ import annotations

import json
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
