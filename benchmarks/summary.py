"""One table of every benchmark's figures: benchmarks/results/*.json -> benchmarks/results/summary.md.

Each row: the figure, its baseline measured in the same run, the ratio, the goal, met or not, and the load; the
machine(s) the results came from are listed under the table. A benchmark that writes a ``figures`` list (the
common field set: ``figure``, ``value``, ``baseline``, ``ratio``, ``goal``, ``met``, optional ``unit``, ``load``)
is taken as it is; older result shapes are read for what they have (known keys per benchmark, else every
``*_met`` flag under ``goals``), and a file that cannot be read is listed as such rather than failing the run.

    .venv/bin/python -m benchmarks.summary            # run by `make bench` after the benchmarks
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._report import RESULTS, summary_row
from meshhook_rt_metrics.logs import redact

Row = dict[str, Any]


def _row(
    figure: str,
    value: Any = None,
    baseline: Any = None,
    ratio: Any = None,
    goal: Any = None,
    met: bool | None = None,
    unit: str = "",
    load: str = "",
) -> Row:
    if ratio is None and _num(value) and _num(baseline) and baseline:
        ratio = value / baseline
    return summary_row(figure, value, baseline, ratio, goal, met, load, unit)


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


# -- readers of the shapes written before the common field set ---------------------------------------------------
def _overhead(d: dict[str, Any]) -> list[Row]:
    target = d.get("target_loss")
    loss = d.get("throughput_loss")
    rows = [
        _row(
            "per-request time, instrumented vs plain handler (in-process loop)",
            d.get("instrumented_us_per_request"),
            d.get("plain_us_per_request"),
            unit="us",
            load="5 measurements per request, live 1 s flush",
        ),
    ]
    if _num(loss):
        rows.append(
            _row(
                "throughput loss (in-process loop)",
                loss,
                None,
                None,
                f"<= {target}" if _num(target) else None,
                float(loss) <= float(target) if _num(target) and _num(loss) else None,  # type: ignore[arg-type]
                "fraction",
            )
        )
    ours, prom = d.get("measurements_us_per_request"), d.get("prometheus_client_measurements_us_per_request")
    if _num(ours) and _num(prom):
        rows.append(_row("measurement cost per request, ours vs prometheus_client", ours, prom, unit="us"))
    return rows


def _hotpath(d: dict[str, Any]) -> list[Row]:
    rows = []
    targets = d.get("targets") or {}
    for case, t in (d.get("ns_per_call") or {}).items():
        for base, ratio in (_get(d, "ratios", case) or {}).items():
            target = targets.get(f"{case}/{base}")
            rows.append(
                _row(
                    f"hot path: {case}, ours vs {base}",
                    t.get("meshhook"),
                    t.get(base),
                    ratio,
                    f"<= {target}" if target is not None else None,
                    ratio <= target if target is not None and _num(ratio) else None,
                    "ns/call",
                )
            )
    return rows


def _alert_latency(d: dict[str, Any]) -> list[Row]:
    goals = d.get("goals") or {}
    rows = []
    ours, prom = _get(d, "latency", "ours_firing", "p99_s"), _get(d, "latency", "prom_firing", "p99_s")
    rows.append(
        _row(
            "alert firing latency p99, ours vs Prometheus + Alertmanager (tuned)",
            ours,
            prom,
            _get(d, "ratios", "firing", "p99"),
            f"<= {goals.get('firing_p99_s_max')} s and ratio <= {goals.get('firing_ratio_max')}",
            (goals.get("firing_p99_met") and goals.get("firing_ratio_met"))
            if "firing_p99_met" in goals
            else None,
            "s",
        )
    )
    for case in ("resolve_common", "resolve_own"):
        o, p = _get(d, "latency", f"ours_{case}", "p99_s"), _get(d, "latency", f"prom_{case}", "p99_s")
        if o is not None:
            rows.append(
                _row(
                    f"alert {case.replace('_', ' ')} latency p99, ours vs Prometheus",
                    o,
                    p,
                    _get(d, "ratios", case, "p99"),
                    unit="s",
                )
            )
    return rows


def _realtime_fanout(d: dict[str, Any]) -> list[Row]:
    goals = d.get("goals") or {}
    return [
        _row(
            "live fan-out latency p99",
            _get(d, "latency_ms", "p99"),
            None,
            None,
            f"<= {goals.get('p99_ms_max')} ms, 0 lost, 0 cross-project",
            goals.get("met"),
            "ms",
            f"{d.get('subscribers')} subscribers, {d.get('projects')} projects",
        )
    ]


def _edge_ingest(d: dict[str, Any]) -> list[Row]:
    """Each path through the metrics-ingest edge function against PostgresSink in the same run."""
    goal = _get(d, "goals", "min_ratio_to_postgres_sink")
    baseline = _get(d, "runs", "postgres_sink", "points_per_second")
    rows = []
    for name, run in (d.get("runs") or {}).items():
        if name == "postgres_sink" or not isinstance(run, dict):
            continue
        ratio = run.get("ratio_to_postgres_sink")
        rows.append(
            _row(
                f"edge function {name}: points/s vs PostgresSink",
                run.get("points_per_second"),
                baseline,
                ratio,
                f">= {goal}" if _num(goal) else None,
                float(ratio) >= float(goal) if _num(goal) and _num(ratio) else None,  # type: ignore[arg-type]
                "points/s",
                f"{_fmt(run.get('function_cpu_ms_per_1000_points'))} ms function CPU per 1,000 points",
            )
        )
    return rows or _generic(d)


def _ingest(d: dict[str, Any]) -> list[Row]:
    """Per design: ingest throughput against a plain COPY of the same points in the same run."""
    goals = d.get("goals") or {}
    want = goals.get("ratio")
    cpu_goal = goals.get("db_cpu_us_per_point")
    fresh_goal = goals.get("freshness_p95_ms")
    paced = _num(d.get("paced_rate_points_per_second"))
    rows = []
    for design in d.get("designs") or []:
        if not isinstance(design, dict):
            continue
        name = f"{design.get('design', '?')} ({d.get('workload') or 'custom'} workload)"
        ingest, copy = _get(design, "ingest", "points_per_second"), _get(design, "copy", "points_per_second")
        ratio = design.get("ratio")
        if paced:  # a paced run measures cost and freshness at a given load, not throughput
            live = _get(design, "freshness", "published_ms_p95")
            rows.append(
                _row(
                    f"ingest design {name}: commit to live message p95",
                    live,
                    goal=f"<= {fresh_goal}" if _num(fresh_goal) else None,
                    met=live <= fresh_goal if _num(live) and _num(fresh_goal) else None,
                    unit="ms",
                )
            )
        else:
            rows.append(
                _row(
                    f"ingest design {name}: points/s, full path vs plain COPY",
                    ingest,
                    copy,
                    ratio,
                    f">= {want}" if _num(want) else None,
                    float(ratio) >= float(want) if _num(want) and _num(ratio) else None,  # type: ignore[arg-type]
                    "points/s",
                )
            )
        cpu, copy_cpu = (
            _get(design, "ingest", "db_cpu_us_per_point"),
            _get(design, "copy", "db_cpu_us_per_point"),
        )
        if _num(cpu):
            rows.append(
                _row(
                    f"ingest design {name}: database CPU per point, full path vs plain COPY",
                    cpu,
                    copy_cpu,
                    None,
                    f"<= {cpu_goal}" if _num(cpu_goal) else None,
                    cpu <= cpu_goal if _num(cpu_goal) else None,
                    "us",
                )
            )
    return rows or _generic(d)


def _generic(d: dict[str, Any]) -> list[Row]:
    """Every ``*_met`` flag (under ``goals`` or at the top), with the thresholds found beside it."""
    rows = []
    for where in (d.get("goals"), d):
        if not isinstance(where, dict):
            continue
        for key, met in where.items():
            if key.endswith("_met") and isinstance(met, bool):
                stem = key[: -len("_met")]
                thresholds = {
                    k: v
                    for k, v in where.items()
                    if not k.endswith("_met") and _num(v) and k.startswith(stem.split("_")[0])
                }
                goal = ", ".join(f"{k} {v:g}" for k, v in thresholds.items()) or None
                value = next((v for k, v in d.items() if k.startswith(stem) and _num(v)), None)
                rows.append(_row(stem.replace("_", " "), value, None, None, goal, met))
        if rows:
            break
    if not rows and isinstance(d.get("goals"), dict):  # thresholds written without a verdict
        goal = ", ".join(f"{k} {v}" for k, v in d["goals"].items() if not isinstance(v, dict | list))
        rows.append(_row("goals (no verdict in the result)", goal=goal or None))
    return rows


READERS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "overhead": _overhead,
    "hotpath": _hotpath,
    "alert_latency": _alert_latency,
    "realtime_fanout": _realtime_fanout,
    "ingest": _ingest,
    "edge_ingest": _edge_ingest,
}


def rows_of(name: str, data: dict[str, Any]) -> list[Row]:
    if isinstance(data.get("figures"), list):
        keys = ("figure", "value", "baseline", "ratio", "goal", "met", "unit", "load", "ratio_spread")
        return [{k: f.get(k) for k in keys} for f in data["figures"] if isinstance(f, dict) and "figure" in f]
    reader = READERS.get(name) or READERS.get(str(data.get("benchmark"))) or _generic
    rows = reader(data)
    return rows or [_row("(no figures found in this result)")]


# -- markdown ------------------------------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "–"
        if v != 0 and abs(v) < 0.01:
            return f"{v:.2e}"
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v).replace("|", "\\|")


def _spread(spread: Any) -> str:
    """A ratio's range over rounds (the ratio itself then is the median of per-round paired ratios)."""
    if (
        isinstance(spread, list)
        and len(spread) == 2
        and all(_num(x) for x in spread)
        and spread[0] != spread[1]
    ):
        return f" ({_fmt(spread[0])}–{_fmt(spread[1])})"
    return ""


def _machine(env: dict[str, Any]) -> str:
    parts = [f"{env.get('cpus', '?')} CPUs"]
    if env.get("cpu_model"):
        parts.append(str(env["cpu_model"]))
    if _num(env.get("cpu_freq_mhz")):
        parts.append(f"{env['cpu_freq_mhz']:.0f} MHz")
    parts.append(f"Python {env.get('python', '?')}")
    parts.append(str(env.get("platform", "?")))
    return ", ".join(parts)


def _summarised(stem: str) -> bool:
    """Every result but the ingest benchmark's custom workloads and its runs from before the named
    workloads (``ingest-<time>``): the summary shows ``ingest-default``, ``-realistic``, ``-fleet`` and
    ``-sustained``."""
    return not (stem.startswith("ingest-custom-") or (stem.startswith("ingest-2") and stem[7:8].isdigit()))


def build(results: Path) -> str:
    files = sorted(p for p in results.glob("*.json") if _summarised(p.stem))
    lines = [
        "# Benchmark summary",
        "",
        "Each figure against its baseline measured in the same run (ratio = value / baseline; where a range "
        "follows it, the benchmark ran rounds and the ratio is the median of the per-round paired ratios, "
        "value and baseline the medians over rounds). "
        "Regenerate with `make bench` (or `.venv/bin/python -m benchmarks.summary` over the JSON there).",
        "",
        "| benchmark | figure | value | baseline | ratio | goal | met | unit | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    machines: dict[str, list[str]] = {}
    runs = []
    met_count = [0, 0]
    for path in files:
        name = path.stem
        try:
            data = json.loads(path.read_text())
            rows = rows_of(name, data)
        except (OSError, ValueError, TypeError, AttributeError, KeyError) as exc:
            lines.append(f"| {name} | (unreadable: {type(exc).__name__}) | | | | | | | |")
            continue
        env = data.get("environment") or data.get("machine") or {}
        env = env if isinstance(env, dict) else {}
        machines.setdefault(_machine(env), []).append(name)
        command = redact(str(data.get("command", "?")))  # results written before write() redacted
        runs.append(f"- `{name}`: `{command}` at {env.get('when') or data.get('when', '?')}")
        for r in rows:
            # a goal the run could not judge (benchmarks._report.paired_verdict) is a goal all the same
            undecided = r["met"] is None and "no verdict" in str(r["goal"])
            if r["met"] is not None or undecided:
                met_count[0] += bool(r["met"])
                met_count[1] += 1
            met = (
                "no verdict"
                if undecided
                else "–"
                if r["met"] is None
                else ("**yes**" if r["met"] else "**NO**")
            )
            lines.append(
                "| "
                + " | ".join(
                    [
                        name,
                        _fmt(r["figure"]),
                        _fmt(r["value"]),
                        _fmt(r["baseline"]),
                        _fmt(r["ratio"]) + _spread(r.get("ratio_spread")),
                        _fmt(r["goal"]),
                        met,
                        _fmt(r["unit"]),
                        _fmt(r["load"]),
                    ]
                )
                + " |"
            )
    lines += ["", f"Goals met: {met_count[0]} of {met_count[1]}.", "", "## Machine", ""]
    lines += [f"- {m}: {', '.join(names)}" for m, names in machines.items()]
    lines += ["", "## Runs", "", *runs, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the JSON results")
    parser.add_argument("--output", type=Path, default=None, help="default: <results>/summary.md")
    args = parser.parse_args(argv)
    text = build(args.results)
    out = args.output or args.results / "summary.md"
    out.write_text(text)
    print(text)
    print(f"written {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
