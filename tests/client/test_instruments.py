"""Instruments and aggregation, shipped into a MemorySink (no database needed)."""

from __future__ import annotations

import asyncio
import json
import math
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from meshhook_rt_metrics.client import LabelError, MetricsClient, Sketch
from tests.client._helpers import in_a_fork, memory_client, totals, user_points, with_concurrent_flushes


def _check_wire(batch: dict[str, Any]) -> None:
    """Structural checks of the batch contract (the database re-validates everything)."""
    assert set(batch) == {"project_id", "source", "batch_id", "points"}
    assert 1 <= len(batch["source"]) <= 200 and 1 <= len(batch["batch_id"]) <= 100
    assert 1 <= len(batch["points"]) <= 50_000
    seen = set()
    for p in batch["points"]:
        series = (p["name"], json.dumps(p["labels"], sort_keys=True))
        assert series not in seen, "one point per series per batch"
        seen.add(series)
        assert p["kind"] in ("counter", "gauge", "histogram")
        assert isinstance(p["count"], int) and p["count"] >= 1
        assert math.isfinite(p["sum"])
        if p["kind"] == "counter":
            assert p["sum"] >= 0 and "sketch" not in p
        else:
            assert p["min"] <= p["max"]
        if p["kind"] == "gauge":
            assert math.isfinite(p["last"])
        if p["kind"] == "histogram":
            sk = p["sketch"]
            assert sk["z"] + sum(sk["p"].values()) + sum(sk["n"].values()) == p["count"]


def test_api_of_the_issue_end_to_end() -> None:
    client, sink = memory_client()
    requests = client.counter(
        "meshhook_webhook_requests_total", "Webhook requests", labels=("outcome", "signature")
    )
    requests.inc(outcome="accepted", signature="verified")
    requests.labels("accepted", "verified").inc(2)
    requests.labels(outcome="rejected", signature="invalid").inc()
    latency = client.histogram(
        "meshhook_step_duration_seconds", "Step duration", labels=("node_type",), unit="seconds"
    )
    latency.observe(0.012, node_type="http_call")
    with latency.time(node_type="http_call"):
        pass
    depth = client.gauge("meshhook_queue_messages", "Queue depth", labels=("queue",))
    depth.set(12, queue="jobs")
    assert client.flush() is True
    batch = sink.batches[0]
    client.close()  # ships a final batch (health metrics, gauge samples)
    _check_wire(batch)
    assert batch["project_id"] == client.project_id and batch["source"] == client.source
    got = totals(sink.batches, "meshhook_webhook_requests_total")
    assert got[(("outcome", "accepted"), ("signature", "verified"))] == [2, 3]
    assert got[(("outcome", "rejected"), ("signature", "invalid"))] == [1, 1]
    (hist,) = [p for p in batch["points"] if p["name"] == "meshhook_step_duration_seconds"]
    assert hist["count"] == 2 and hist["unit"] == "seconds" and hist["help"] == "Step duration"
    (gauge,) = [p for p in batch["points"] if p["name"] == "meshhook_queue_messages"]
    assert gauge["last"] == 12 and gauge["count"] == 1 and gauge["labels"] == {"queue": "jobs"}


def test_one_delta_per_series_per_flush_and_nothing_when_idle() -> None:
    client, sink = memory_client()
    c = client.counter("jobs_total", labels=("kind",))
    for _ in range(5):
        c.inc(kind="a")
    client.flush()
    client.flush()  # nothing new: no user point
    c.inc(3, kind="a")
    client.flush()
    pts = [p for p in user_points(sink.batches) if p["name"] == "jobs_total"]
    assert [(p["count"], p["sum"]) for p in pts] == [(5, 5), (1, 3)]
    ids = [b["batch_id"] for b in sink.batches]
    assert len(ids) == len(set(ids)) and ids == sorted(ids)


def test_exact_totals_under_threads_with_concurrent_flushes() -> None:
    client, sink = memory_client()
    counter = client.counter("work_total", labels=("worker",))
    hist = client.histogram("work_seconds")
    threads_n, per_thread = 8, 20_000

    def work(i: int) -> None:
        child = counter.labels(worker=str(i % 2))
        for j in range(per_thread):
            if j % 2:
                child.inc()
            else:
                counter.inc(worker=str(i % 2))
            hist.observe((j % 100) / 10)

    with_concurrent_flushes(client, work, threads_n)
    got = totals(sink.batches, "work_total")
    assert sum(v[1] for v in got.values()) == threads_n * per_thread
    assert sum(v[0] for v in got.values()) == threads_n * per_thread
    hists = [p for p in user_points(sink.batches) if p["name"] == "work_seconds"]
    assert sum(p["count"] for p in hists) == threads_n * per_thread
    merged = Sketch()
    for p in hists:
        merged.merge(Sketch.from_wire(p["sketch"]))
    assert merged.count == threads_n * per_thread
    assert math.isclose(sum(p["sum"] for p in hists), threads_n * per_thread / 100 * sum(range(100)) / 10)
    for b in sink.batches:
        _check_wire(b)
    # no state per thread: after the flush every series' log is empty, however many threads wrote
    assert all(not child._log for child in counter.children())


def test_labels_are_declared() -> None:
    client, _ = memory_client()
    c = client.counter("requests_total", labels=("outcome", "signature"))
    with pytest.raises(TypeError, match=r"requests_total.inc\(\) missing .* argument: 'signature'"):
        c.inc(outcome="accepted")
    with pytest.raises(TypeError, match=r"requests_total.inc\(\) got an unexpected keyword argument 'route'"):
        c.inc(outcome="accepted", signature="none", route="/x")
    with pytest.raises(LabelError, match="expected 2 label values"):
        c.labels("only-one")
    with pytest.raises(LabelError, match=r"missing \['signature'\]; undeclared \['route'\]"):
        c.labels(outcome="x", route="/x")
    plain = client.counter("plain_total")
    with pytest.raises(TypeError, match="unexpected keyword argument 'outcome'"):
        plain.inc(outcome="x")
    h = client.histogram("h_seconds", labels=("node_type",))
    with pytest.raises(TypeError, match=r"h_seconds.observe\(\) missing"):
        h.observe(1.0)
    g = client.gauge("g", labels=("queue",))
    with pytest.raises(LabelError, match=r"missing \['queue'\]"):
        g.set(1.0, q="x")
    # labels named like Python keywords or like the value argument work too
    odd = client.counter("odd_total", labels=("class", "amount"))
    odd.inc(2, **{"class": "x", "amount": "y"})
    with pytest.raises(LabelError, match=r"missing \['amount'\]"):
        odd.inc(**{"class": "x"})
    with pytest.raises(ValueError, match="invalid label name"):
        client.counter("bad_total", labels=("foo-bar",))
    with pytest.raises(ValueError, match="invalid metric name"):
        client.counter("bad-name")
    with pytest.raises(ValueError, match="already registered"):
        client.gauge("requests_total")
    assert client.counter("requests_total", labels=("outcome", "signature")) is c


def test_keyword_order_does_not_matter() -> None:
    client, sink = memory_client()
    c = client.counter("r_total", labels=("a", "b"))
    c.inc(a="1", b="2")
    c.inc(b="2", a="1")
    c.labels(b="2", a="1").inc()
    c.labels("1", "2").inc()
    client.flush()
    assert totals(sink.batches, "r_total") == {(("a", "1"), ("b", "2")): [4, 4]}


def test_label_values_are_stringified_and_truncated() -> None:
    client, sink = memory_client(max_label_value_length=16)
    c = client.counter("codes_total", labels=("status", "route"))
    c.inc(status=200, route="x" * 100)
    c.inc(status=200, route="x" * 100)  # cached: ints are fine fast-path keys
    c.inc(status=True, route="y")  # bools never share an entry with 1
    c.inc(status=1, route="y")
    client.flush()
    got = {tuple(p["labels"].values()): p["count"] for p in user_points(sink.batches)}
    assert got == {("200", "x" * 16): 2, ("True", "y"): 1, ("1", "y"): 1}


def test_cardinality_cap_routes_to_overflow_and_counts_dropped_sets() -> None:
    client, sink = memory_client(max_label_sets=5)
    c = client.counter("tenants_total", labels=("tenant",))
    for i in range(12):
        for _ in range(3):
            c.inc(tenant=f"t{i}")
    client.flush()
    client.flush()  # health counters recorded during the first flush ship with the second
    got = totals(sink.batches, "tenants_total")
    assert len(got) == 6
    assert got[(("tenant", "__overflow__"),)] == [21, 21]
    assert sum(v[1] for v in got.values()) == 36
    dropped = totals(sink.batches, "meshhook_metrics_client_dropped_label_sets_total")
    assert dropped == {(("metric", "tenants_total"),): [7, 7]}
    assert len(c.children()) == 6  # memory stays bounded


SECRETS = {
    "jwt": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.abcdefghijklmnop",
    "bearer": "Bearer abcdef0123456789abcdef",
    "url": "postgresql://postgres:hunter2secret@db.example.com:5432/postgres",
    "stripe": "sk_live_51HxYzAbCdEfGhIjKlMn",
    "github": "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "query": "api_key=s3cr3t-value&page=2",
    "hex": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
}


def test_default_redactor_hides_secrets() -> None:
    client, sink = memory_client(max_label_value_length=1024)
    c = client.counter("calls_total", labels=("value",))
    for raw in SECRETS.values():
        c.inc(value=raw)
    c.inc(value="/api/hooks/[slug]")
    c.inc(value="6f1c2a9e-3b7d-4c5e-9a10-1234567890ab")  # identifiers are not secrets
    client.flush()
    values = {p["labels"]["value"] for p in user_points(sink.batches)}
    joined = " ".join(values)
    for word in (
        "hunter2secret",
        "abcdef0123456789",
        "sk_live_51",
        "ghp_abc",
        "s3cr3t",
        "9f86d08188",
        "eyJhbGci",
    ):
        assert word not in joined, (word, values)
    assert "/api/hooks/[slug]" in values
    assert "6f1c2a9e-3b7d-4c5e-9a10-1234567890ab" in values
    assert "postgresql://postgres:[REDACTED]@db.example.com:5432/postgres" in values
    assert "api_key=[REDACTED]&page=2" in values


def test_redactor_is_replaceable() -> None:
    client, sink = memory_client()
    client.registry.redact = lambda v: v.upper()
    client.counter("x_total", labels=("v",)).inc(v="abc")
    client.flush()
    assert user_points(sink.batches)[0]["labels"] == {"v": "ABC"}
    other = MetricsClient(
        project_id=client.project_id,
        sink=sink,
        redactor=lambda v: "same",
        background=False,
        system_metrics=False,
        spool_enabled=False,
    )
    assert other.registry.redact("anything") == "same"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -1, "3"])
def test_bad_values_raise_in_development(bad: Any) -> None:
    client, _ = memory_client(mode="development")
    c = client.counter("c_total")
    h = client.histogram("h_seconds", labels=("k",))
    g = client.gauge("g")
    with pytest.raises(ValueError, match="c_total: counter increment"):
        c.inc(bad)
    with pytest.raises(ValueError, match="c_total: counter increment"):
        c.labels().inc(bad)
    if bad != -1:
        with pytest.raises(ValueError, match="h_seconds: histogram value"):
            h.observe(bad, k="x")
        with pytest.raises(ValueError, match="h_seconds: histogram value"):
            h.labels("x").observe(bad)
        with pytest.raises(ValueError, match="g: gauge value"):
            g.set(bad)


def test_bad_values_are_counted_and_dropped_in_production() -> None:
    client, sink = memory_client()
    c = client.counter("c_total")
    h = client.histogram("h_seconds")
    g = client.gauge("g")
    for bad in (math.nan, math.inf, -1, "3", None):
        c.inc(bad)  # type: ignore[arg-type]
        g.set(bad)  # type: ignore[arg-type]
    for bad in (math.nan, -math.inf, "3", None):
        h.observe(bad)  # type: ignore[arg-type]
    c.inc(2)
    h.observe(-1.5)  # negative observations are legitimate
    client.flush()
    client.flush()
    assert totals(sink.batches, "c_total") == {(): [1, 2]}
    assert totals(sink.batches, "h_seconds") == {(): [1, -1.5]}
    assert {p["last"] for p in user_points(sink.batches) if p["name"] == "g"} == {-1}  # -1 is a fine gauge
    invalid = totals(sink.batches, "meshhook_metrics_client_invalid_values_total")
    assert invalid[(("metric", "c_total"),)][1] == 5
    assert invalid[(("metric", "g"),)][1] == 4
    assert invalid[(("metric", "h_seconds"),)][1] == 4


def test_a_point_beyond_the_databases_limits_is_held_back_and_the_flush_ships() -> None:
    """Values no real service records (a sum past 1e290: metrics.max_point_sum(), migration 20261206001700)
    would get the whole batch refused by the database; that one point is counted as invalid instead."""
    client, sink = memory_client()
    c = client.counter("c_total")
    h = client.histogram("h_seconds")
    h.observe(1e300)
    c.inc(2)
    client.flush()
    h.observe(0.5)
    client.flush()
    assert totals(sink.batches, "c_total") == {(): [1, 2]}
    assert totals(sink.batches, "h_seconds") == {(): [1, 0.5]}, "the next interval ships as usual"
    invalid = totals(sink.batches, "meshhook_metrics_client_invalid_values_total")
    assert invalid[(("metric", "h_seconds"),)][1] == 1


def test_gauges_set_inc_dec_and_callbacks() -> None:
    client, sink = memory_client()
    inflight = client.up_down_counter("meshhook_inflight_requests")
    inflight.inc()
    inflight.inc(4)
    inflight.dec(2)
    readings = iter([7.0, 9.0])
    client.gauge("meshhook_pool_size", callback=lambda: next(readings))
    queue = {("jobs",): 3.0, ("mail",): 1.0}
    client.gauge("meshhook_queue_messages", labels=("queue",), callback=lambda: queue)
    client.gauge("meshhook_broken", callback=lambda: 1 / 0)
    client.flush()
    pts = {(p["name"], tuple(p["labels"].values())): p for p in user_points(sink.batches)}
    inf = pts[("meshhook_inflight_requests", ())]
    assert (inf["count"], inf["sum"], inf["min"], inf["max"], inf["last"]) == (3, 1 + 5 + 3, 1, 5, 3)
    assert pts[("meshhook_pool_size", ())]["last"] == 7.0 and pts[("meshhook_pool_size", ())]["count"] == 1
    assert pts[("meshhook_queue_messages", ("jobs",))]["last"] == 3.0
    assert ("meshhook_broken", ()) not in pts
    sink.batches.clear()
    client.flush()  # unchanged gauges are sampled once per flush, callbacks re-read
    pts = {(p["name"], tuple(p["labels"].values())): p for p in user_points(sink.batches)}
    assert (
        pts[("meshhook_inflight_requests", ())]["count"],
        pts[("meshhook_inflight_requests", ())]["last"],
    ) == (1, 3)
    assert pts[("meshhook_pool_size", ())]["last"] == 9.0


def test_timer_as_context_manager_and_decorator() -> None:
    client, sink = memory_client()
    h = client.histogram("step_seconds", labels=("node_type",))

    @h.time(node_type="fn")
    def work(x: int) -> int:
        return x * 2

    @h.time(node_type="coro")
    async def awork() -> str:
        await asyncio.sleep(0.01)
        return "done"

    with h.time(node_type="block"):
        pass
    assert work(21) == 42 and work(1) == 2
    assert asyncio.run(awork()) == "done"
    client.flush()
    got = totals(sink.batches, "step_seconds")
    assert got[(("node_type", "fn"),)][0] == 2
    assert got[(("node_type", "block"),)][0] == 1
    assert got[(("node_type", "coro"),)][1] >= 0.009


def test_health_and_loop_lag_metrics() -> None:
    async def main() -> MetricsClient:
        c, _ = memory_client(system_metrics=True, host_metrics=False)
        c.monitor_event_loop(interval=0.01)
        await asyncio.sleep(0.1)
        return c

    client = asyncio.run(main())
    client.flush()
    client.flush()
    names = {p["name"] for b in client._sink.batches for p in b["points"]}  # type: ignore[attr-defined]
    for expected in (
        "asyncio_event_loop_lag_seconds",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_threads",
        "meshhook_metrics_client_batches_sent_total",
        "meshhook_metrics_client_flush_duration_seconds",
        "meshhook_metrics_client_spool_bytes",
    ):
        assert expected in names, expected


def test_host_metrics_are_reported_by_one_process_per_host(tmp_path: Path) -> None:
    first, sink = memory_client(tmp_path, system_metrics=True)
    second, other_sink = memory_client(tmp_path, system_metrics=True, project_id=first.project_id)
    for _ in range(2):
        first.flush()
        second.flush()
    names = {p["name"] for b in sink.batches for p in b["points"]}
    expected = {
        "system_cpu_utilization_ratio",
        "system_memory_available_bytes",
        "python_gc_collections_total",
    }
    assert expected <= names
    assert "system_network_io_bytes_total" in names
    other = {p["name"] for b in other_sink.batches for p in b["points"]}
    assert "process_cpu_seconds_total" in other and not any(n.startswith("system_") for n in other)
    first.close()  # the reporter leaves: the other process takes over (from a fresh baseline)
    second.flush()
    second.flush()
    assert any(p["name"].startswith("system_") for b in other_sink.batches for p in b["points"])
    for b in sink.batches + other_sink.batches:
        _check_wire(b)
    second.close()


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    project = "6f1c2a9e-3b7d-4c5e-9a10-1234567890ab"
    monkeypatch.setenv("MESHHOOK_METRICS_PROJECT_ID", project)
    monkeypatch.setenv("MESHHOOK_METRICS_DATABASE_URL", "postgresql://u:secret@127.0.0.1:1/db")
    monkeypatch.setenv("MESHHOOK_METRICS_FLUSH_INTERVAL", "2.5")
    monkeypatch.setenv("MESHHOOK_METRICS_MAX_LABEL_SETS", "7")
    monkeypatch.setenv("MESHHOOK_METRICS_MODE", "development")
    monkeypatch.setenv("MESHHOOK_METRICS_SPOOL_DIR", str(tmp_path))
    monkeypatch.setenv("MESHHOOK_METRICS_BACKGROUND", "false")
    monkeypatch.setenv("MESHHOOK_METRICS_SYSTEM_METRICS", "false")
    client = MetricsClient(flush_interval=0.5)  # keywords win over the environment
    assert client.project_id == project
    assert client.settings.flush_interval == 0.5 and client.settings.max_label_sets == 7
    assert client.registry.strict and client.registry.max_label_sets == 7
    assert "secret" not in repr(client.settings) and "secret" not in repr(client._sink)
    assert client.spool.dir is not None and client.spool.dir.parent == tmp_path / project
    client.close(timeout=0.5)
    monkeypatch.delenv("MESHHOOK_METRICS_PROJECT_ID")
    with pytest.raises(ValueError, match="project_id is required"):
        MetricsClient()
    monkeypatch.delenv("MESHHOOK_METRICS_DATABASE_URL")
    with pytest.raises(ValueError, match="no backend"):
        MetricsClient(project_id=project)


def test_fork_child_starts_clean(tmp_path: Path) -> None:
    client, sink = memory_client()
    c = client.counter("forked_total")
    c.inc(5)  # unflushed in the parent at fork time

    def in_child() -> dict[str, Any]:
        c.inc(3)
        client.flush()
        return {
            "source": client.source,
            "total": sum(v[1] for v in totals(sink.batches, "forked_total").values()),
        }

    _, child = in_a_fork(in_child)
    assert child["total"] == 3
    assert child["source"] != client.source
    c.inc()
    client.flush()
    assert totals(sink.batches, "forked_total") == {(): [2, 6]}


def test_prometheus_exposition_is_cumulative(tmp_path: Path) -> None:
    client, _ = memory_client()
    requests = client.counter("meshhook_webhook_requests_total", "Webhook requests", labels=("outcome",))
    step = client.histogram("meshhook_step_duration_seconds", "Step duration")
    depth = client.gauge("meshhook_queue_messages", "Queue depth", labels=("queue",))

    def in_a_thread() -> None:  # a finished thread's updates are folded, not lost
        for _ in range(5):
            requests.inc(outcome="accepted")

    t = threading.Thread(target=in_a_thread)
    t.start()
    t.join()
    requests.inc(3, outcome="accepted")
    for v in range(1, 101):
        step.observe(v / 100)
    depth.set(4, queue="jobs")
    client.flush()  # flushing ships deltas; the exposition stays cumulative
    requests.inc(outcome="rejected")

    def parse(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        out = {}
        for family in text_string_to_metric_families(text.decode()):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    samples = parse(client.prometheus_text())
    assert samples[("meshhook_webhook_requests_total", (("outcome", "accepted"),))] == 8
    assert samples[("meshhook_webhook_requests_total", (("outcome", "rejected"),))] == 1
    assert samples[("meshhook_step_duration_seconds_count", ())] == 100
    assert abs(samples[("meshhook_step_duration_seconds", (("quantile", "0.5"),))] - 0.5) <= 0.01 * 0.5
    assert samples[("meshhook_queue_messages", (("queue", "jobs"),))] == 4
    port = client.serve_prometheus(0)
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).content
    assert parse(body)[("meshhook_webhook_requests_total", (("outcome", "accepted"),))] == 8
    client.close()


def test_a_request_logs_folds_come_after_the_series_own_pending_calls() -> None:
    """``absorb_steps`` and ``absorb_ones`` fold what the series' own calls logged first: a gauge's last
    value is the last update made, whichever path made it."""
    client, sink = memory_client()
    gauge = client.up_down_counter("g").labels()
    counter = client.counter("c_total").labels()
    gauge.set(5)  # logged, not yet folded
    counter.inc(2.5)
    gauge.absorb_steps([1, 1, -1])
    counter.absorb_ones(3)
    client.flush()
    (point,) = [p for p in user_points(sink.batches) if p["name"] == "g"]
    assert (point["count"], point["sum"], point["min"], point["max"], point["last"]) == (
        4,
        24.0,
        5.0,
        7.0,
        6.0,
    )
    assert totals(sink.batches, "c_total") == {(): [4, 5.5]}


def test_a_histogram_batch_judges_odd_values_one_by_one() -> None:
    """The fold sorts a batch first: values it cannot sort or sum are judged one by one, the good kept."""
    from decimal import Decimal

    client, sink = memory_client()
    h = client.histogram("h_seconds")
    for v in (0.5, "abc", Decimal("1.5"), None, 2, math.nan, 10**400, True, [1.0]):
        h.observe(v)  # type: ignore[arg-type]
    client.flush()
    (point,) = [p for p in user_points(sink.batches) if p["name"] == "h_seconds"]
    assert (point["count"], point["sum"], point["min"], point["max"]) == (4, 5.0, 0.5, 2.0)
    invalid = totals(sink.batches, "meshhook_metrics_client_invalid_values_total")
    assert invalid[(("metric", "h_seconds"),)][1] == 5
