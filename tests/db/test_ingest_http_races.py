"""metrics.ingest_http under concurrency (two sessions): the first exports of a new cumulative stream convert one
after the other, and concurrent requests sharing an ingest token never wait for each other's token row."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from typing import Any

import psycopg

from tests.support import TestDatabase, batch, counter


def _token(conn: psycopg.Connection[Any], project: uuid.UUID) -> str:
    token = f"mhi_{uuid.uuid4().hex}{uuid.uuid4().hex}"
    conn.execute("insert into metrics.projects (id) values (%s) on conflict do nothing", (project,))
    conn.execute(
        "insert into metrics.ingest_tokens (project_id, token_hash, token_prefix) values (%s, %s, %s)",
        (project, hashlib.sha256(token.encode()).digest(), token[:12]),
    )
    return token


def _cumulative(project: uuid.UUID, batch_id: str, value: float, ago: float) -> dict[str, Any]:
    point = counter("meshhook_race_total", value, {"queue": "q"}, ts=time.time() - ago)
    point["cumulative"] = {"stream": "race-stream", "start": "1000"}
    return batch(project, [point], source="otlp/race", batch_id=batch_id)


def _ingest_http(conn: psycopg.Connection[Any], payload: dict[str, Any], token: str) -> dict[str, Any]:
    row = conn.execute("select metrics.ingest_http(%s::jsonb, %s)", (json.dumps(payload), token)).fetchone()
    assert row is not None
    result: dict[str, Any] = row[0]
    return result


def test_first_exports_of_a_new_stream_convert_one_after_the_other(db: TestDatabase) -> None:
    project = uuid.uuid4()
    with psycopg.connect(db.url, autocommit=True) as setup:
        token = _token(setup, project)
        # nothing else to wait for: the series exists (a delta point of it), the token's use was just recorded
        point = counter("meshhook_race_total", 0, {"queue": "q"})
        _ingest_http(setup, batch(project, [point], source="otlp/setup", batch_id="0"), token)
    with psycopg.connect(db.url) as first, psycopg.connect(db.url, autocommit=True) as second:
        # the first export of the stream, not yet committed
        assert _ingest_http(first, _cumulative(project, "a", 10, 20), token)["status"] == "accepted"
        results: list[dict[str, Any]] = []
        errors: list[BaseException] = []

        def later_export() -> None:
            try:
                second.execute("set lock_timeout = '20s'")
                results.append(_ingest_http(second, _cumulative(project, "b", 15, 10), token))
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        thread = threading.Thread(target=later_export)
        thread.start()
        thread.join(timeout=1.0)
        assert thread.is_alive(), (
            f"the second export of a new stream did not wait for the first: {results} {errors}"
        )
        first.commit()
        thread.join(timeout=30)
        assert not thread.is_alive() and not errors, errors
        assert results and results[0]["status"] == "accepted", results
    with psycopg.connect(db.url) as conn:
        total = conn.execute(
            "select sum(p.sum) from metrics.points p join metrics.series s on s.id = p.series_id"
            " where s.project_id = %s and s.name = 'meshhook_race_total'",
            (project,),
        ).fetchone()
        state = conn.execute(
            "select start_ns, sum from metrics.ingest_streams where project_id = %s", (project,)
        ).fetchall()
    # 10, then 15 - 10: the later export is a difference to the first, not a second full value (25)
    assert total == (15.0,)
    assert state == [("1000", 15.0)]


def test_requests_sharing_a_token_do_not_wait_for_its_last_use(db: TestDatabase) -> None:
    project = uuid.uuid4()
    point = counter("meshhook_shared_total", 1, {"queue": "q"})
    with psycopg.connect(db.url, autocommit=True) as setup:
        token = _token(setup, project)
        # the series exists (creating series takes a per-project lock of its own), the token was not used
        _ingest_http(setup, batch(project, [point], source="w0", batch_id="0"), token)
        setup.execute(
            "update metrics.ingest_tokens set last_used_at = null where project_id = %s", (project,)
        )
    with psycopg.connect(db.url) as first, psycopg.connect(db.url) as second:
        # the first request records the token's use and is still running (not committed)
        assert (
            _ingest_http(first, batch(project, [point], source="w1", batch_id="1"), token)["status"]
            == "accepted"
        )
        second.execute("set lock_timeout = '1s'")
        started = time.monotonic()
        result = _ingest_http(second, batch(project, [point], source="w2", batch_id="1"), token)
        assert result["status"] == "accepted"
        assert time.monotonic() - started < 1.0
        second.commit()
        first.commit()
    with psycopg.connect(db.url) as conn:
        used = conn.execute(
            "select last_used_at from metrics.ingest_tokens where project_id = %s", (project,)
        ).fetchone()
    assert used is not None and used[0] is not None, "the use is recorded (by the first request)"
