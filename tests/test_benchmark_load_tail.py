"""benchmarks.load_tail without h2load: the idle service is held off the CPU, latencies pool across windows,
and the p99 goal is judged by the bootstrap's interval, not by one pooled ratio."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from benchmarks import load_tail, load_webhook


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_only_the_active_service_runs() -> None:
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2)]

    class Held:
        def __init__(self, proc: subprocess.Popen[bytes]) -> None:
            self.proc = proc

    servers: dict[str, Any] = {"plain": Held(procs[0]), "ours": Held(procs[1])}
    try:
        for active, idle in (("plain", "ours"), ("ours", "plain")):
            load_tail.held(servers, active)
            time.sleep(0.2)
            assert _state(servers[idle].proc.pid) == "T"  # stopped
            assert _state(servers[active].proc.pid) != "T"
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _window(latencies_ms: list[float], elapsed: float = 1.0, cpu: float = 0.1) -> dict[str, Any]:
    """A window whose requests start evenly over its second; the slowest in the phase the index gives."""
    binned = [round(ms * 1000 / load_tail.BIN_US) for ms in latencies_ms]
    phased = Counter((i * load_tail.PHASES // len(binned), b) for i, b in enumerate(binned))
    return {
        "bins": Counter(binned),
        "phased": phased,
        "requests": len(binned),
        "failed": 0,
        "ok_2xx": len(binned),
        "elapsed_s": elapsed,
        "server_cpu_s": cpu,
    }


def test_a_periodic_stall_shows_as_a_tail_gathered_in_one_tenth_of_the_second() -> None:
    # 200 requests a second, 10 of them slow: spread over the second, or all in its first 50 ms
    spread = [20.0 if i % 20 == 0 else 4.0 for i in range(200)]
    stalled = [20.0 if i < 10 else 4.0 for i in range(200)]
    assert load_tail.tail_in_busiest_tenth([_window(spread)], 10.0) == pytest.approx(
        0.1
    )  # one in every other phase
    assert load_tail.tail_in_busiest_tenth([_window(stalled)] * 3, 10.0) == 1.0
    assert load_tail.tail_in_busiest_tenth([_window(stalled)], 30.0) != load_tail.tail_in_busiest_tenth(
        [_window(stalled)], 30.0
    )  # nothing above: undefined (nan), not a share


def test_latencies_pool_across_windows_before_the_quantile() -> None:
    # one window's tail is the other's bulk: the pooled p99 is neither window's own
    a, b = [1.0] * 99 + [50.0], [2.0] * 100
    pooled = load_tail.pool([_window(a), _window(b)], [0, 1])
    assert load_tail.pooled_quantile(pooled, 0.99) == 2.0
    assert load_tail.pooled_quantile(load_tail.pool([_window(a)], [0]), 0.99) == 1.0
    assert load_tail.pooled_quantile(load_tail.pool([_window(a)], [0, 0]), 0.995) == 50.0


@pytest.mark.parametrize(("ours_tail", "verdict"), [(8.0, True), (9.0, False)])
def test_the_p99_goal_is_judged_by_the_bootstrap_interval(ours_tail: float, verdict: bool) -> None:
    plain = [_window([4.0] * 98 + [8.0] * 2) for _ in range(10)]
    ours = [_window([4.0] * 98 + [ours_tail] * 2) for _ in range(10)]
    judged = load_tail.judge({"plain": plain, "ours": ours}, 200, seed=1)
    assert judged["p99_ms_ratio"] == pytest.approx(ours_tail / 8.0)
    assert judged["p99_verdict"] is verdict
    low, high = judged["p99_ratio_interval"]
    assert low <= judged["p99_ms_ratio"] <= high


def test_the_interval_spans_what_resampling_the_pairs_can_give() -> None:
    # ours' tail is 8.2 ms in 9 pairs of 10 and 12 ms in one: resamples without that pair give 8.2 / 8 =
    # 1.025, those with it more; the interval is within those bounds and its top above the goal
    plain = [_window([4.0] * 98 + [8.0] * 2) for _ in range(10)]
    ours = [_window([4.0] * 98 + [12.0 if i == 0 else 8.2] * 2) for i in range(10)]
    judged = load_tail.judge({"plain": plain, "ours": ours}, 400, seed=1)
    low, high = judged["p99_ratio_interval"]
    assert low == pytest.approx(1.025)
    assert 1.025 <= high <= 1.5 and judged["p99_verdict"] is False  # every resample misses the goal


def test_a_run_with_failed_requests_is_not_judged() -> None:
    plain = [_window([4.0] * 98 + [8.0] * 2) for _ in range(10)]
    ours = [_window([4.0] * 98 + [8.0] * 2) for _ in range(10)]
    ours[3]["failed"] = 5  # five answered with an error: they are not among the latencies pooled
    judged = load_tail.judge({"plain": plain, "ours": ours}, 100, seed=1)
    assert judged["p99_ratio_interval"][1] <= 1.0 and judged["p99_verdict"] is None
    rows = load_tail.figures({"fixed_rate": judged}, {"fixed_rate": "h2load"})
    assert rows[0]["goal"].endswith("(5 requests failed, so not judged)")


def test_pairs_that_disagree_give_no_verdict() -> None:
    # half the pairs put ours' tail 20 % above plain's, half 20 % below: the pooled ratio is near 1.0, but
    # the resampled pairs spread it far past the goal on both sides
    plain, ours = [], []
    for i in range(10):
        hi, lo = (12.0, 8.0) if i % 2 else (8.0, 12.0)
        ours.append(_window([4.0] * 98 + [hi] * 2))
        plain.append(_window([4.0] * 98 + [lo] * 2))
    judged = load_tail.judge({"plain": plain, "ours": ours}, 400, seed=1)
    assert judged["p99_verdict"] is None
    low, high = judged["p99_ratio_interval"]
    assert low < 1.0 and high > load_webhook.GOAL_P99_RATIO
    rows = load_tail.figures({"fixed_rate": judged}, {"fixed_rate": "h2load"})
    assert rows[0]["met"] is None and rows[0]["goal"].endswith("over 10 pairs: no verdict")
