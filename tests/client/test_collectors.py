"""Worker identity of the system collectors: ``service``/``instance`` on process metrics, ``host`` on
host metrics, opt-in constant labels (MemorySink, no database needed)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from meshhook_rt_metrics.client import MetricsClient
from meshhook_rt_metrics.client.settings import ClientSettings, default_service_name
from tests.client._helpers import in_a_fork, memory_client

PROCESS_GAUGES = ("process_resident_memory_bytes", "process_virtual_memory_bytes", "process_threads")
HOST_METRICS = ("system_cpu_utilization_ratio", "system_memory_available_bytes")


def _series(client: MetricsClient) -> dict[str, list[dict[str, str]]]:
    """metric name -> label sets of every point shipped so far."""
    out: dict[str, list[dict[str, str]]] = {}
    for batch in client._sink.batches:  # type: ignore[attr-defined]
        for p in batch["points"]:
            labels = out.setdefault(p["name"], [])
            if p["labels"] not in labels:
                labels.append(p["labels"])
    return out


def _flushed(client: MetricsClient, times: int = 2) -> dict[str, list[dict[str, str]]]:
    for _ in range(times):
        client.flush()
    return _series(client)


def test_two_clients_in_one_process_are_two_series_not_one_merged_gauge() -> None:
    a, _ = memory_client(
        system_metrics=True, host_metrics=False, service_name="api", service_instance="web-1"
    )
    b, _ = memory_client(
        system_metrics=True, host_metrics=False, service_name="api", service_instance="web-2"
    )
    sa, sb = _flushed(a), _flushed(b)
    for name in (*PROCESS_GAUGES, "process_cpu_seconds_total"):
        assert sa[name] == [{"service": "api", "instance": "web-1"}], name
        assert sb[name] == [{"service": "api", "instance": "web-2"}], name
    # as the database keys series by (name, labels): two series per process gauge, not one last writer
    for name in PROCESS_GAUGES:
        keys = {json.dumps(labels, sort_keys=True) for labels in sa[name] + sb[name]}
        assert len(keys) == 2, name
    gc_labels = sa["python_gc_collections_total"] + sa.get("python_gc_objects_collected_total", [])
    assert gc_labels and all(
        lb["service"] == "api" and lb["instance"] == "web-1" and "generation" in lb for lb in gc_labels
    )
    a.close(timeout=0.5)
    b.close(timeout=0.5)


def test_defaults_program_name_host_pid_and_hostname(tmp_path: Path) -> None:
    client, _ = memory_client(tmp_path, system_metrics=True)
    host = socket.gethostname()
    expected = {"service": default_service_name(), "instance": f"{host}:{os.getpid()}"}
    assert client.process_labels == expected
    assert client.host_name == host
    series = _flushed(client, 3)
    for name in PROCESS_GAUGES:
        assert series[name] == [expected], name
    for name in HOST_METRICS:  # the only client of this project on the host: elected reporter
        assert series[name] == [{"host": host}], name
    assert all(
        lb["host"] == host and set(lb) == {"host", "direction"}
        for lb in series["system_network_io_bytes_total"]
    )
    # application metrics stay unlabelled by default: they merge across workers as before
    client.counter("meshhook_webhook_requests_total").inc()
    assert _flushed(client, 1)["meshhook_webhook_requests_total"] == [{}]
    assert _series(client)["meshhook_metrics_client_batches_sent_total"] == [{}]
    client.close(timeout=0.5)


@pytest.mark.parametrize(
    ("argv0", "expected"),
    [
        ("/srv/venv/bin/gunicorn", "gunicorn"),
        ("/app/worker.py", "worker"),
        ("/app/meshhook_worker/__main__.py", "meshhook_worker"),
        ("", "python"),
        ("-c", "python"),
        ("__init__.py", "python"),
    ],
)
def test_default_service_name_is_the_program_name(
    monkeypatch: pytest.MonkeyPatch, argv0: str, expected: str
) -> None:
    monkeypatch.setattr(sys, "argv", [argv0])
    assert default_service_name() == expected
    assert ClientSettings().resolved_service_name() == expected


def test_configured_values_override_keywords_and_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MESHHOOK_METRICS_SERVICE_NAME", "meshhook-worker")
    monkeypatch.setenv("MESHHOOK_METRICS_SERVICE_INSTANCE", "worker-7")
    monkeypatch.setenv("MESHHOOK_METRICS_HOST_NAME", "node-a")
    monkeypatch.setenv("MESHHOOK_METRICS_CONSTANT_LABELS", '{"region": "eu-west-1"}')
    client, _ = memory_client(tmp_path, system_metrics=True, host_name="node-b")  # keyword wins
    assert client.settings.constant_labels == {"region": "eu-west-1"}
    series = _flushed(client, 3)
    expected = {"region": "eu-west-1", "service": "meshhook-worker", "instance": "worker-7"}
    for name in PROCESS_GAUGES:
        assert series[name] == [expected], name
    for name in HOST_METRICS:
        assert series[name] == [{"region": "eu-west-1", "host": "node-b"}], name
    client.close(timeout=0.5)


def test_constant_labels_reach_application_metrics_only_when_opted_in() -> None:
    plain, _ = memory_client()
    tagged, _ = memory_client(constant_labels={"region": "eu", "deployment": "blue"})
    for client in (plain, tagged):
        client.counter("meshhook_workflow_runs_completed_total", labels=("status",)).inc(status="ok")
        client.histogram("meshhook_webhook_body_bytes").observe(10)
        client.gauge("meshhook_queue_messages", labels=("queue",)).set(3, queue="jobs")
    ps, ts = _flushed(plain, 1), _flushed(tagged, 1)
    assert ps["meshhook_workflow_runs_completed_total"] == [{"status": "ok"}]
    assert ps["meshhook_webhook_body_bytes"] == [{}]
    assert ps["meshhook_queue_messages"] == [{"queue": "jobs"}]
    const = {"region": "eu", "deployment": "blue"}
    assert ts["meshhook_workflow_runs_completed_total"] == [{**const, "status": "ok"}]
    assert ts["meshhook_webhook_body_bytes"] == [const]
    assert ts["meshhook_queue_messages"] == [{**const, "queue": "jobs"}]
    # the instruments themselves are untouched (the labels are added to the shipped points)
    assert tagged.registry.get("meshhook_queue_messages").label_names == ("queue",)  # type: ignore[union-attr]
    plain.close(timeout=0.5)
    tagged.close(timeout=0.5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"service_name": ""}, "service_name: label value must not be empty"),
        ({"service_name": " api"}, "leading or trailing whitespace"),
        ({"service_instance": "web\n1"}, "control characters"),
        ({"service_instance": "__overflow__"}, "must not start with '__'"),
        ({"host_name": "h" * 129}, "at most 128 allowed"),
        ({"host_name": "h" * 60, "max_label_value_length": 50}, "at most 50 allowed"),
        ({"constant_labels": {"bad-name": "x"}}, "invalid label name 'bad-name'"),
        ({"constant_labels": {"service": "x"}}, r"\['service'\] reserved"),
        ({"constant_labels": {"region": ""}}, r"constant_labels\['region'\]: label value must not be empty"),
        ({"constant_labels": {f"l{i}": "x" for i in range(9)}}, "at most 8 labels"),
    ],
)
def test_bad_identity_settings_are_refused_clearly(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        memory_client(**options)


def test_secret_looking_identity_is_refused() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3In0.c2lnbmF0dXJl"
    with pytest.raises(ValueError, match="service_instance: label value looks like a secret"):
        memory_client(service_instance=token)
    with pytest.raises(ValueError, match=r"constant_labels\['team'\]: label value looks like a secret"):
        memory_client(constant_labels={"team": "password=hunter22"})


def test_restart_with_a_stable_instance_continues_the_same_series() -> None:
    totals: list[float] = []
    labels: list[dict[str, str]] = []
    for _ in range(2):  # two "lives" of the worker, same configured instance
        client, sink = memory_client(system_metrics=True, host_metrics=False, service_instance="web-1")
        sum(i * i for i in range(200_000))  # burn some CPU
        client.flush()
        points = [p for b in sink.batches for p in b["points"] if p["name"] == "process_cpu_seconds_total"]
        labels += [p["labels"] for p in points]
        totals.append(sum(p["sum"] for p in points))
        client.close(timeout=0.5)
    assert {json.dumps(lb, sort_keys=True) for lb in labels} == {
        json.dumps({"service": default_service_name(), "instance": "web-1"}, sort_keys=True)
    }
    assert all(t > 0 for t in totals)  # deltas: each life adds its CPU time to the same series


def test_loop_lag_carries_the_process_labels() -> None:
    async def main() -> MetricsClient:
        c, _ = memory_client(system_metrics=True, host_metrics=False, service_instance="web-3")
        c.monitor_event_loop(interval=0.01)
        await asyncio.sleep(0.1)
        return c

    client = asyncio.run(main())
    series = _flushed(client, 1)
    assert series["asyncio_event_loop_lag_seconds"] == [
        {"service": default_service_name(), "instance": "web-3"}
    ]
    client.close(timeout=0.5)


@pytest.mark.parametrize("instance", [None, "web-1"])
def test_a_forked_child_reports_under_its_own_instance(instance: str | None) -> None:
    options: dict[str, Any] = {"system_metrics": True, "host_metrics": False}
    if instance is not None:
        options["service_instance"] = instance
    client, sink = memory_client(**options)
    client.flush()
    parent_labels = client.process_labels

    def in_child() -> dict[str, Any]:
        client.flush()
        rss = [p["labels"] for b in sink.batches for p in b["points"] if p["name"] == PROCESS_GAUGES[0]]
        return {"labels": client.process_labels, "rss": rss}

    pid, child = in_a_fork(in_child)
    prefix = instance if instance is not None else socket.gethostname()
    assert child["labels"]["instance"] == f"{prefix}:{pid}" != parent_labels["instance"]
    assert child["rss"][-1] == child["labels"]  # the child's own series, not the parent's
    assert parent_labels["instance"] == (instance or f"{socket.gethostname()}:{os.getpid()}")
    client.close(timeout=0.5)
