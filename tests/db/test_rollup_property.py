"""Property: whatever the order, the resends and the path (the JSON RPC, whose points keep their sketches as
jsonb, or ``metrics.ingest_known``, whose points keep them as arrays), minute rollups equal a recomputation
from what was sent."""

from __future__ import annotations

import json
import math
import random
import time
import uuid
from collections import defaultdict
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshhook_rt_metrics.client.known_series import INGEST_KNOWN, array_literals
from tests.support import TestDatabase, batch, counter, gauge, histogram, ingest, merge_points

METRICS = {"jobs_total": "counter", "queue_depth": "gauge", "step_seconds": "histogram"}
LABEL_SETS = [{}, {"node_type": "http_call"}, {"node_type": "transform", "outcome": "ok"}]

_URL: dict[str, str] = {}


@pytest.fixture(autouse=True, scope="module")
def _remember_url(db: TestDatabase) -> None:
    """hypothesis tests cannot take function fixtures; they read the module's database URL from here."""
    _URL["url"] = db.url


point_spec = st.tuples(
    st.sampled_from(sorted(METRICS)),
    st.integers(0, len(LABEL_SETS) - 1),
    st.integers(0, 179),  # seconds before now: spans up to four minutes
    st.lists(st.floats(min_value=-50, max_value=5000, allow_nan=False), min_size=1, max_size=20),
)
batch_spec = st.lists(point_spec, min_size=1, max_size=6)
source_spec = st.lists(batch_spec, min_size=1, max_size=4)


def _point(metric: str, labels: dict[str, str], ts: float, values: list[float]) -> dict[str, Any]:
    kind = METRICS[metric]
    if kind == "counter":
        return counter(metric, sum(abs(v) for v in values), labels, ts=ts, count=len(values))
    if kind == "gauge":
        p = gauge(metric, values[-1], labels, ts=ts)
        p.update(count=len(values), sum=sum(values), min=min(values), max=max(values))
        return p
    return histogram(metric, values, labels, ts=ts)


def _send(
    conn: psycopg.Connection[Any],
    payload: dict[str, Any],
    ids: dict[tuple[str, str], int],
    rng: random.Random,
) -> str:
    """One batch through ingest_known (as arrays) when all its series exist and a coin says so, else through
    the RPC (as jsonb), whose series are then learnt: both forms, mixed within minutes, and a resend through the
    other path is a duplicate (one ledger)."""
    keys = [(p["name"], json.dumps(p.get("labels") or {}, sort_keys=True)) for p in payload["points"]]
    if rng.random() < 0.5 and all(k in ids for k in keys):
        literals = array_literals(payload["points"], [ids[k] for k in keys])
        assert literals is not None
        row = conn.execute(
            INGEST_KNOWN, (payload["project_id"], payload["source"], payload["batch_id"], *literals)
        ).fetchone()
        assert row is not None
        merge_points(conn)
        return str(row[0]["status"])
    status = str(ingest(conn, payload)["status"])
    for sid, name, labels in conn.execute(
        "select id, name, labels from metrics.series where project_id = %s", (payload["project_id"],)
    ):
        ids[(name, json.dumps(labels, sort_keys=True))] = sid
    return status


def _read_back(conn: psycopg.Connection[Any], project: uuid.UUID) -> tuple[list[Any], list[Any]]:
    """Each minute rollup and series total beside what its raw points add up to."""
    rows = conn.execute(
        "select s.name, s.labels, extract(epoch from r.bucket)::bigint / 60, r.count, r.sum, r.min, r.max, r.last,"
        " metrics.sketch_quantile(r.sketch, 0.5, r.min, r.max), metrics.sketch_quantile(r.sketch, 0.99, r.min, r.max),"
        " r.sketch = (select metrics.sketch_union(metrics.point_sketch(p)) from metrics.points p"
        "             where p.series_id = r.series_id and date_trunc('minute', p.ts) = r.bucket),"
        " (select array[sum(p.count), sum(p.sum)] from metrics.points p"
        "             where p.series_id = r.series_id and date_trunc('minute', p.ts) = r.bucket)"
        " from metrics.rollup_1m r join metrics.series s on s.id = r.series_id where r.project_id = %s",
        (project,),
    ).fetchall()
    totals = conn.execute(
        "select t.count, t.sum, metrics.series_total_sketch(t.series_id) is not distinct from"
        "   (select metrics.sketch_union(metrics.point_sketch(p)) from metrics.points p where p.series_id = t.series_id),"
        " (select array[sum(p.count), sum(p.sum)] from metrics.points p where p.series_id = t.series_id)"
        " from metrics.series_totals_current t where t.project_id = %s",
        (project,),
    ).fetchall()
    return rows, totals


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(sources=st.lists(source_spec, min_size=1, max_size=3), seed=st.integers(0, 2**32 - 1))
def test_rollups_equal_recomputation_whatever_the_order_and_resends(
    sources: list[list[list[Any]]], seed: int
) -> None:
    rng = random.Random(seed)
    project = uuid.uuid4()
    now = math.floor(time.time())
    sends: list[dict[str, Any]] = []
    expected: dict[tuple[str, str, int], dict[str, Any]] = defaultdict(
        lambda: {"count": 0, "sum": 0.0, "min": math.inf, "max": -math.inf, "last": None, "values": []}
    )
    for s, batches in enumerate(sources):
        for b, points in enumerate(batches):
            wire_points = []
            for metric, label_idx, ago, values in points:
                ts = now - ago + rng.random() * 0.9
                labels = LABEL_SETS[label_idx]
                point = _point(metric, labels, ts, values)
                wire_points.append(point)
                key = (metric, str(sorted(labels.items())), int(ts // 60))
                agg = expected[key]
                agg["count"] += point["count"]
                agg["sum"] += point["sum"]
                if "min" in point:
                    agg["min"] = min(agg["min"], point["min"])
                    agg["max"] = max(agg["max"], point["max"])
                if point.get("last") is not None and (
                    agg["last"] is None or (ts, point["last"]) > agg["last"]
                ):
                    agg["last"] = (ts, point["last"])
                agg["values"] += values
            sends.append(batch(project, wire_points, source=f"worker-{s}", batch_id=str(b)))
    sends += rng.sample(sends, k=len(sends) // 2)  # resends, e.g. replayed from a spool
    rng.shuffle(sends)

    with psycopg.connect(_URL["url"], autocommit=True) as conn:
        ids: dict[tuple[str, str], int] = {}
        statuses = [_send(conn, payload, ids, rng) for payload in sends]
        assert statuses.count("accepted") == sum(len(b) for b in sources)
        rows, totals = _read_back(conn, project)

    assert len(totals) == len({(name, str(sorted(labels.items()))) for name, labels, *_ in rows})
    for count, total, sketch_ok, raw in totals:
        assert (count, total) == (raw[0], pytest.approx(raw[1], rel=1e-12, abs=1e-9)), "totals = raw points"
        assert sketch_ok, "the whole total sketch (folded minutes + open ones) = the merge of every point's"
    assert len(rows) == len(expected)
    for (
        name,
        labels,
        minute,
        count,
        total,
        lo,
        hi,
        last,
        p50,
        p99,
        sketch_ok,
        raw_ok,
    ) in rows:  # raw: [count, sum]
        want = expected[(name, str(sorted(labels.items())), minute)]
        assert (count, total) == (raw_ok[0], pytest.approx(raw_ok[1], rel=1e-12, abs=1e-9)), (
            "rollup = its raw points"
        )
        assert count == want["count"]
        assert total == pytest.approx(want["sum"], rel=1e-9, abs=1e-9)
        kind = METRICS[name]
        if kind == "counter":
            continue
        assert (lo, hi) == (want["min"], want["max"])
        if kind == "gauge":
            assert last == want["last"][1]
            continue
        assert sketch_ok, "rollup sketch equals the merge of its points' sketches"
        ordered = sorted(want["values"])
        for q, got in ((0.5, p50), (0.99, p99)):
            exact = ordered[math.floor(q * (len(ordered) - 1))]
            if abs(exact) >= 1e-9:
                assert got == pytest.approx(exact, rel=0.01)
            else:
                assert abs(got) <= 1e-9 * 1.02
