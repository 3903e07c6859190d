"""Both sinks: PostgresSink against the real database, SupabaseSink error mapping against a stand-in."""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import pytest

from meshhook_rt_metrics.client import (
    BatchTooLargeError,
    InvalidBatchError,
    MetricsClient,
    NotAuthorisedError,
    PostgresSink,
    SinkError,
    Sketch,
    SupabaseSink,
    known_series,
)
from meshhook_rt_metrics.client.known_series import series_key
from tests.support import TestDatabase, merge_points


def _batch(project: str, points: list[dict[str, Any]], batch_id: str = "b1") -> dict[str, Any]:
    return {"project_id": project, "source": "test:1:abcdef", "batch_id": batch_id, "points": points}


def _counter_point(**extra: Any) -> dict[str, Any]:
    return {
        "name": "meshhook_webhook_requests_total",
        "kind": "counter",
        "labels": {"outcome": "accepted"},
        "ts": time.time(),
        "count": 3,
        "sum": 3,
        **extra,
    }


def rollup_totals(url: str, project: str, name: str) -> dict[str, Any]:
    """count/sum/min/max summed or merged over all minutes and series of a metric, once the rollup pass has
    merged everything committed so far."""
    with psycopg.connect(url) as conn:
        merge_points(conn)
        row = conn.execute(
            """select coalesce(sum(r.count), 0), coalesce(sum(r.sum), 0), min(r.min), max(r.max)
               from metrics.rollup_1m r join metrics.series s on s.id = r.series_id
               where r.project_id = %s and s.name = %s""",
            (project, name),
        ).fetchone()
        assert row is not None
        sketches = conn.execute(
            """select r.sketch from metrics.rollup_1m r join metrics.series s on s.id = r.series_id
               where r.project_id = %s and s.name = %s and r.sketch is not null""",
            (project, name),
        ).fetchall()
    merged = Sketch()
    for (sk,) in sketches:
        merged.merge(Sketch.from_wire(sk))
    return {"count": int(row[0]), "sum": float(row[1]), "min": row[2], "max": row[3], "sketch": merged}


def test_postgres_sink_accepts_dedupes_and_rejects(db: TestDatabase) -> None:
    project = str(uuid.uuid4())
    sink = PostgresSink(db.url)
    result = sink.send(_batch(project, [_counter_point()]))
    assert result["status"] == "accepted" and result["points"] == 1
    assert sink.send(_batch(project, [_counter_point()]))["status"] == "duplicate"
    with pytest.raises(InvalidBatchError, match=r"points\[0\]\.labels\.foo-bar"):
        sink.send(_batch(project, [_counter_point(labels={"foo-bar": "x"})], batch_id="b2"))
    assert rollup_totals(db.url, project, "meshhook_webhook_requests_total")["sum"] == 3
    sink.close()


def test_postgres_sink_unreachable_is_a_retryable_error() -> None:
    sink = PostgresSink("postgresql://postgres:postgres@127.0.0.1:1/postgres", timeout=1)
    with pytest.raises(SinkError) as info:
        sink.send(_batch(str(uuid.uuid4()), [_counter_point()]))
    assert not isinstance(info.value, NotAuthorisedError)


def test_client_ships_every_kind_to_the_database(db: TestDatabase, tmp_path: Path) -> None:
    project = str(uuid.uuid4())
    with MetricsClient(
        project_id=project, database_url=db.url, spool_dir=tmp_path, flush_interval=0.2
    ) as client:
        requests = client.counter(
            "meshhook_webhook_requests_total", "Webhook requests", labels=("outcome", "signature")
        )
        latency = client.histogram(
            "meshhook_workflow_step_duration_seconds",
            "Step duration",
            labels=("node_type", "outcome"),
            unit="seconds",
        )
        depth = client.gauge("meshhook_queue_messages", "Queue depth", labels=("queue", "state"))
        values = [0.001 * (i % 250 + 1) for i in range(5000)] + [0.0, -0.5]
        for i, v in enumerate(values):
            requests.inc(outcome="accepted" if i % 3 else "rejected", signature="verified")
            latency.observe(v, node_type="http_call", outcome="ok")
            if i % 1000 == 0:
                time.sleep(0.25)  # let the background thread flush a few times mid-stream
        depth.set(12, queue="jobs", state="ready")
        client.flush()
        assert client.spool.pending == 0
    got = rollup_totals(db.url, project, "meshhook_webhook_requests_total")
    assert got["count"] == len(values) and got["sum"] == len(values)
    hist = rollup_totals(db.url, project, "meshhook_workflow_step_duration_seconds")
    assert hist["count"] == len(values)
    assert math.isclose(hist["sum"], sum(values), rel_tol=1e-9)
    assert hist["min"] == -0.5 and hist["max"] == 0.25
    assert hist["sketch"].count == len(values)
    exact = sorted(values)
    p99 = hist["sketch"].quantile(0.99, hist["min"], hist["max"])
    assert abs(p99 - exact[math.floor(0.99 * (len(exact) - 1))]) <= 0.01 * abs(p99)
    with psycopg.connect(db.url) as conn:
        names = {
            r[0] for r in conn.execute("select name from metrics.series where project_id = %s", (project,))
        }
        rejected = conn.execute(
            "select count(*) from metrics.batches where project_id = %s", (project,)
        ).fetchone()
    # system and health metrics were accepted by the database's validation too
    assert {
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "meshhook_queue_messages",
        "meshhook_metrics_client_batches_sent_total",
    } <= names
    assert rejected is not None and rejected[0] >= 2
    assert got["count"] == len(values)


# ---------------------------------------------------------------------------------------------------
# SupabaseSink: error mapping only. The stand-in below is NOT the gateway: it replays canned Data API
# responses so that every status/code mapping is exercised. The real-gateway test comes with the
# local stack's gateway.
# ---------------------------------------------------------------------------------------------------
class _StandIn(BaseHTTPRequestHandler):
    responses: ClassVar[dict[str, tuple[int, Any]]] = {}
    seen: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append({"path": self.path, "headers": dict(self.headers), "body": body})
        status, payload = self.responses[body["batch"]["batch_id"]]
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stand_in() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_supabase_sink_request_shape_and_error_mapping(stand_in: str) -> None:
    """Stand-in server, canned responses: checks headers/body and the mapping of each error to an outcome."""
    _StandIn.responses = {
        "ok": (200, {"status": "accepted", "points": 1, "series_created": 1, "overflowed": 0}),
        "bad": (
            400,
            {
                "code": "22023",
                "message": "points[0].labels.foo-bar: invalid label name",
                "details": None,
                "hint": None,
            },
        ),
        "anon": (401, {"code": "42501", "message": "permission denied", "details": None, "hint": None}),
        "forbidden": (403, {"code": "42501", "message": "not a member", "details": None, "hint": None}),
        "down": (503, {"code": "PGRST000", "message": "database unavailable"}),
        "missing": (404, {"code": "PGRST202", "message": "function not found"}),
    }
    _StandIn.seen = []
    project = str(uuid.uuid4())
    sink = SupabaseSink(stand_in, "service-key", timeout=2)
    assert sink.send(_batch(project, [_counter_point()], "ok"))["status"] == "accepted"
    request = _StandIn.seen[0]
    assert request["path"] == "/rest/v1/rpc/ingest"
    assert request["headers"]["apikey"] == "service-key"
    assert request["headers"]["Authorization"] == "Bearer service-key"
    assert request["headers"]["Content-Profile"] == "metrics"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["body"]["batch"]["project_id"] == project
    with pytest.raises(InvalidBatchError, match="foo-bar"):
        sink.send(_batch(project, [_counter_point()], "bad"))
    for name in ("anon", "forbidden"):
        with pytest.raises(NotAuthorisedError):
            sink.send(_batch(project, [_counter_point()], name))
    for name in ("down", "missing"):
        with pytest.raises(SinkError) as info:
            sink.send(_batch(project, [_counter_point()], name))
        assert not isinstance(info.value, NotAuthorisedError)
    sink.close()
    with pytest.raises(SinkError):
        SupabaseSink("http://127.0.0.1:1", "k", timeout=1).send(_batch(project, [_counter_point()], "ok"))


def test_supabase_sink_retries_everything_but_an_invalid_batch(stand_in: str) -> None:
    """Only a PostgREST error whose code is SQLSTATE class 22/23 means "the batch is invalid"; any other
    400, 404 (function not migrated), 406 (schema not exposed), 409, 5xx is retryable; 413 splits."""
    _StandIn.responses = {
        "parse": (400, {"code": "PGRST102", "message": "Empty or invalid json"}),
        "plain400": (400, {"message": "bad request from a proxy"}),
        "not-exposed": (406, {"code": "PGRST106", "message": "The schema must be one of: public"}),
        "missing": (404, {"code": "PGRST202", "message": "Could not find the function metrics.ingest"}),
        "undefined": (404, {"code": "42883", "message": "function metrics.ingest(jsonb) does not exist"}),
        "deadlock": (500, {"code": "40P01", "message": "deadlock detected"}),
        "conflict-config": (409, {"code": "PGRST116", "message": "ambiguous"}),
        "too-large": (413, {"message": "request entity too large"}),
        "unique": (409, {"code": "23505", "message": "duplicate key value violates unique constraint"}),
        "check": (400, {"code": "23514", "message": "violates check constraint"}),
        "data": (400, {"code": "22P02", "message": "invalid input syntax"}),
    }
    project = str(uuid.uuid4())
    sink = SupabaseSink(stand_in, "service-key", timeout=2)
    for name in ("parse", "plain400", "not-exposed", "missing", "undefined", "deadlock", "conflict-config"):
        with pytest.raises(SinkError) as info:
            sink.send(_batch(project, [_counter_point()], name))
        assert not isinstance(info.value, (NotAuthorisedError, BatchTooLargeError)), name
    with pytest.raises(BatchTooLargeError):
        sink.send(_batch(project, [_counter_point()], "too-large"))
    for name in ("unique", "check", "data"):
        with pytest.raises(InvalidBatchError):
            sink.send(_batch(project, [_counter_point()], name))
    sink.close()


class _FailingConnection:
    closed = False

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def execute(self, *args: Any) -> Any:
        raise self.exc

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (psycopg.errors.InvalidParameterValue("points[0].name: invalid"), InvalidBatchError),
        (psycopg.errors.NumericValueOutOfRange("out of range"), InvalidBatchError),
        (psycopg.errors.UniqueViolation("duplicate key"), InvalidBatchError),
        (psycopg.errors.CheckViolation("check"), InvalidBatchError),
        (psycopg.errors.UndefinedFunction("function metrics.ingest(jsonb) does not exist"), SinkError),
        (psycopg.errors.InvalidSchemaName("schema metrics does not exist"), SinkError),
        (psycopg.errors.DeadlockDetected("deadlock detected"), SinkError),
        (psycopg.errors.QueryCanceled("statement timeout"), SinkError),
        (psycopg.errors.InternalError_("internal error"), SinkError),
        (psycopg.errors.InsufficientPrivilege("not allowed"), NotAuthorisedError),
    ],
)
def test_postgres_sink_error_classes(error: Exception, expected: type[Exception]) -> None:
    sink = PostgresSink("postgresql://unused")
    sink._conn = _FailingConnection(error)
    with pytest.raises(expected) as info:
        sink.send(_batch(str(uuid.uuid4()), [_counter_point()]))
    if expected is SinkError:
        assert not isinstance(info.value, (InvalidBatchError, NotAuthorisedError))


# ---------------------------------------------------------------------------------------------------
# PostgresSink's known-series path (client/known_series.py, metrics.ingest_known: migration 20261206001000)
# ---------------------------------------------------------------------------------------------------
def _histogram_point(values: list[float], **extra: Any) -> dict[str, Any]:
    sketch = Sketch()
    sketch.extend(values)
    return {
        "name": "meshhook_workflow_step_duration_seconds",
        "kind": "histogram",
        "labels": {"node_type": "http_call"},
        "ts": time.time(),
        "count": len(values),
        "sum": sum(values),
        "min": min(values),
        "max": max(values),
        "sketch": sketch.to_wire(),
        **extra,
    }


def test_postgres_sink_sends_batches_of_known_series_in_one_call(db: TestDatabase) -> None:
    project = str(uuid.uuid4())
    sink = PostgresSink(db.url)
    first = sink.send(_batch(project, [_counter_point(), _histogram_point([0.1, 0.2])], batch_id="b1"))
    assert first["status"] == "accepted" and "path" not in first, "new series: the RPC creates them"
    second = sink.send(_batch(project, [_counter_point(), _histogram_point([0.3])], batch_id="b2"))
    assert second == {
        "status": "accepted",
        "points": 2,
        "series_created": 0,
        "overflowed": 0,
        "path": "known",
    }
    assert sink.send(_batch(project, [_counter_point()], batch_id="b2"))["status"] == "duplicate"
    with pytest.raises(InvalidBatchError, match=r"points\[0\]\.sum: .*counter"):
        sink.send(_batch(project, [_counter_point(sum=-1)], batch_id="b3"))
    assert rollup_totals(db.url, project, "meshhook_webhook_requests_total")["sum"] == 6
    hist = rollup_totals(db.url, project, "meshhook_workflow_step_duration_seconds")
    assert hist["count"] == 3 and hist["sketch"].count == 3
    # the refused batch made the sink forget the project's ids: the next batch learns them again
    assert "path" not in sink.send(_batch(project, [_counter_point()], batch_id="b4"))
    assert sink.send(_batch(project, [_counter_point()], batch_id="b5"))["path"] == "known"
    sink.close()


def test_postgres_sink_relearns_a_series_id_gone_stale(db: TestDatabase) -> None:
    """A series deleted under the sink (by hand: the product never deletes one) fails the known-series
    path's check; the batch goes through the RPC, which creates the series again, and nothing is lost."""
    project = str(uuid.uuid4())
    sink = PostgresSink(db.url)
    sink.send(_batch(project, [_counter_point()], batch_id="b1"))
    assert sink.send(_batch(project, [_counter_point()], batch_id="b2"))["path"] == "known"
    with psycopg.connect(db.url, autocommit=True) as conn:
        merge_points(conn)
        conn.execute("delete from metrics.series where project_id = %s", (project,))
    result = sink.send(_batch(project, [_counter_point()], batch_id="b3"))
    assert result["status"] == "accepted" and result["series_created"] == 1 and "path" not in result
    assert sink.send(_batch(project, [_counter_point()], batch_id="b4"))["path"] == "known"
    assert rollup_totals(db.url, project, "meshhook_webhook_requests_total")["sum"] == 6
    sink.close()


def test_postgres_sink_keeps_the_rpc_for_overflow_and_other_kinds(db: TestDatabase) -> None:
    project = str(uuid.uuid4())
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute("insert into metrics.projects (id, series_quota) values (%s, 1)", (project,))
    sink = PostgresSink(db.url)
    sink.send(_batch(project, [_counter_point()], batch_id="b1"))
    over = _counter_point(labels={"outcome": "rejected"})
    result = sink.send(_batch(project, [_counter_point(), over], batch_id="b2"))
    assert result["overflowed"] == 1 and "path" not in result
    again = sink.send(_batch(project, [_counter_point(), over], batch_id="b3"))
    assert "path" not in again and again["overflowed"] == 1, (
        "an overflowed series never takes the known-series path"
    )
    with pytest.raises(InvalidBatchError, match="is a counter, not a gauge"):
        sink.send(_batch(project, [_counter_point(kind="gauge", min=1, max=1, last=1)], batch_id="b4"))
    # the overflow series has the metric's name too: 3 + 2 * (3 + 3)
    assert rollup_totals(db.url, project, "meshhook_webhook_requests_total")["sum"] == 15
    sink.close()


@pytest.mark.parametrize(
    "reads_series", [False, True], ids=["cannot-read-series", "cannot-call-ingest-known"]
)
def test_postgres_sink_falls_back_to_the_rpc_without_the_known_series_rights(
    db: TestDatabase, reads_series: bool
) -> None:
    """A login role trusted to ingest (BYPASSRLS) but without the known-series path's rights: it cannot look
    its series up, or it can but may not call metrics.ingest_known."""
    role, password = f"ingest_only_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with psycopg.connect(db.admin_url, autocommit=True) as admin:
        admin.execute(f"create role {role} login bypassrls password '{password}'")
        admin.execute(f"grant usage on schema metrics to {role}")
        admin.execute(f"grant execute on function metrics.ingest(jsonb) to {role}")
        if reads_series:
            admin.execute(f"grant select on metrics.series, metrics.families to {role}")
    project = str(uuid.uuid4())
    url = db.url.replace("postgres:", f"{role}:", 1).replace(db.url.split(":")[2].split("@")[0], password, 1)
    sink = PostgresSink(url)
    for n in range(3):
        result = sink.send(_batch(project, [_counter_point()], batch_id=f"b{n}"))
        assert result["status"] == "accepted" and "path" not in result
    assert sink._known is None, "the sink gave the known-series path up"
    assert rollup_totals(db.url, project, "meshhook_webhook_requests_total")["sum"] == 9
    sink.close()


_KNOWN_ARGS = (
    "uuid, text, text, bigint[], double precision[], bigint[], double precision[], double precision[],"
    " double precision[], double precision[]"
)


@pytest.mark.parametrize(
    "dropped",
    [["bigint[], text[], text[], text[], text[]"], ["bigint[], text[], text[], text[], text[]", "jsonb[]"]],
    ids=["before-sketch-arrays", "before-ingest-known"],
)
def test_postgres_sink_falls_back_to_the_rpc_on_a_database_without_ingest_known(
    fresh_db: TestDatabase, dropped: list[str]
) -> None:
    """A database migrated before the overload the client calls existed (before migration 20261206002200, or
    before ingest_known at all; dropped here to stand for one): the batch goes through the RPC, nothing is
    spooled for ever or lost."""
    with psycopg.connect(fresh_db.url, autocommit=True) as conn:
        for sketch_args in dropped:
            conn.execute(f"drop function metrics.ingest_known({_KNOWN_ARGS}, {sketch_args})")
    project = str(uuid.uuid4())
    sink = PostgresSink(fresh_db.url)
    for n in range(3):
        result = sink.send(_batch(project, [_counter_point()], batch_id=f"b{n}"))
        assert result["status"] == "accepted" and "path" not in result
    assert sink._known is None, "the sink gave the known-series path up"
    assert rollup_totals(fresh_db.url, project, "meshhook_webhook_requests_total")["sum"] == 9
    sink.close()


class _KnownThenRpc:
    """A connection whose metrics.ingest_known call fails with ``exc`` and whose RPC accepts the batch."""

    closed = False

    def __init__(self, exc: Exception) -> None:
        self.exc = exc
        self.statements: list[str] = []

    def execute(self, query: str, params: Any = None) -> Any:
        self.statements.append(query.split("(", 1)[0])
        if "ingest_known" in query:
            raise self.exc
        return _Rows([({"status": "accepted", "points": 1},)])

    def close(self) -> None:
        self.closed = True


class _Rows:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows


@pytest.mark.parametrize(
    ("error", "path_kept"),
    [
        (psycopg.errors.InsufficientPrivilege("permission denied for function ingest_known"), False),
        (psycopg.errors.UndefinedFunction("function metrics.ingest_known(...) does not exist"), False),
        (psycopg.errors.InsufficientPrivilege("not allowed to write project 0b6f"), True),
        (psycopg.errors.AmbiguousFunction("function metrics.ingest_known is not unique"), True),
    ],
    ids=["no-execute", "not-migrated", "project-refused", "other-42"],
)
def test_postgres_sink_lets_the_rpc_judge_what_the_known_series_path_refuses(
    error: Exception, path_kept: bool
) -> None:
    """Only a missing function or EXECUTE right gives the path up; any other refusal of class 42 sends the
    batch through the RPC and keeps the path for the next one. Nothing is raised, nothing lost."""
    project = str(uuid.uuid4())
    point = _counter_point()
    sink = PostgresSink("postgresql://unused")
    assert sink._known is not None
    sink._known._ids[series_key(project, point)] = 7
    conn = _KnownThenRpc(error)
    sink._conn = conn
    result = sink.send(_batch(project, [point]))
    assert result["status"] == "accepted" and "path" not in result
    assert conn.statements == ["select metrics.ingest_known", "select metrics.ingest"]
    assert (sink._known is not None) is path_kept


def test_postgres_sink_without_the_known_series_path_always_takes_the_rpc(db: TestDatabase) -> None:
    project = str(uuid.uuid4())
    sink = PostgresSink(db.url, known_series=False)
    for n in range(3):
        result = sink.send(_batch(project, [_counter_point()], batch_id=f"b{n}"))
        assert result["status"] == "accepted" and "path" not in result
    assert rollup_totals(db.url, project, "meshhook_webhook_requests_total")["sum"] == 9
    sink.close()


def test_postgres_sink_learns_many_series_a_chunk_at_a_time(
    db: TestDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Series ids are read back a chunk at a time (bounded memory on a first flush of many series); every
    chunk is learnt, so the next batch of the same series takes the known-series path whole."""
    monkeypatch.setattr(known_series, "LEARN_CHUNK", 2)
    project = str(uuid.uuid4())
    points = [_counter_point(labels={"outcome": f"o{i}"}) for i in range(5)]
    sink = PostgresSink(db.url)
    assert "path" not in sink.send(_batch(project, points, batch_id="b1"))
    assert sink._known is not None and len(sink._known._ids) == 5
    assert sink.send(_batch(project, points, batch_id="b2"))["path"] == "known"
    assert rollup_totals(db.url, project, "meshhook_webhook_requests_total")["sum"] == 30
    sink.close()
