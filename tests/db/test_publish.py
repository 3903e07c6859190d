"""Live publish: coalesced to at most one message per project per interval, compact, split when large."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.support import TestDatabase, batch, counter, histogram, ingest


@pytest.fixture
def conn(fresh_db: TestDatabase) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(fresh_db.url, autocommit=True) as connection:
        yield connection


def messages(conn: psycopg.Connection[Any], project: uuid.UUID) -> list[dict[str, Any]]:
    rows = conn.execute(
        "select payload, event, private, extension from realtime.messages where topic = %s order by inserted_at, id",
        (f"metrics:{project}",),
    ).fetchall()
    assert all(r[1:] == ("rollup", True, "broadcast") for r in rows), "private broadcasts with event 'rollup'"
    return [r[0] for r in rows]


def set_interval(conn: psycopg.Connection[Any], project: uuid.UUID, interval: str) -> None:
    conn.execute(
        "insert into metrics.projects (id, publish_interval) values (%s, %s::interval)"
        " on conflict (id) do update set publish_interval = excluded.publish_interval",
        (project, interval),
    )


def test_many_ingest_statements_within_one_interval_make_at_most_one_message(
    conn: psycopg.Connection[Any],
) -> None:
    project, other = uuid.uuid4(), uuid.uuid4()
    set_interval(conn, project, "1 hour")
    set_interval(conn, other, "1 hour")
    ts = (time.time() // 60) * 60 - 50  # one minute for all 20 statements, however long they take
    for i in range(20):
        ingest(conn, batch(project, [counter("hits_total", 1, {"n": str(i % 5)}, ts=ts)]))
        ingest(conn, batch(other, [counter("hits_total", 1, ts=ts)]))
        conn.execute("select metrics.publish_pending()")  # sweeps respect the rate limit too
    assert len(messages(conn, project)) == 1
    assert len(messages(conn, other)) == 1
    first = messages(conn, project)[0]
    assert [s["labels"] for s in first["series"]] == [{"n": "0"}], "the first statement published at once"

    # once the interval has passed, one sweep sends everything queued since, in one message
    conn.execute(
        "update metrics.publish_state set last_sent_at = now() - interval '2 hours' where project_id = %s",
        (project,),
    )
    assert conn.execute("select metrics.publish_pending()").fetchone() == (1,)
    second = messages(conn, project)[1]
    assert second["seq"] == 2 and second["parts"] == 1
    assert sorted(s["labels"]["n"] for s in second["series"]) == ["0", "1", "2", "3", "4"]
    totals = {s["labels"]["n"]: (s["count"], s["sum"]) for s in second["series"]}
    assert totals == {str(n): (4, 4.0) for n in range(5)}, "aggregates are the minute's totals, not deltas"
    assert len(messages(conn, other)) == 1, "another project's rate limit is its own"
    assert conn.execute(
        "select count(*) from metrics.publish_queue where project_id = %s", (project,)
    ).fetchone() == (0,)


def test_message_carries_series_identity_aggregates_and_percentiles_only(
    conn: psycopg.Connection[Any],
) -> None:
    project = uuid.uuid4()
    ingest(
        conn,
        batch(
            project,
            [
                histogram("step_seconds", [0.1, 0.2, 0.3, 0.4], {"node_type": "http_call"}),
                counter("hits_total", 2, {"outcome": "ok"}),
            ],
        ),
    )
    (message,) = messages(conn, project)
    assert set(message) == {"id", "project_id", "seq", "part", "parts", "series"}
    assert message["project_id"] == str(project)
    by_name = {s["name"]: s for s in message["series"]}
    hist = by_name["step_seconds"]
    assert set(hist) == {
        "series_id",
        "name",
        "labels",
        "kind",
        "minute",
        "count",
        "sum",
        "min",
        "max",
        "p50",
        "p90",
        "p99",
    }
    assert hist["p50"] == pytest.approx(0.2, rel=0.01)
    assert hist["p99"] == pytest.approx(0.3, rel=0.01), "rank q*(n-1), as DDSketch"
    assert set(by_name["hits_total"]) == {"series_id", "name", "labels", "kind", "minute", "count", "sum"}


@pytest.mark.parametrize(
    ("limit", "series", "pad"),
    [(10000, 400, 50), (200000, 3000, 0)],
    ids=["wide-series", "many-small-series-at-the-default-limit"],
)
def test_large_updates_are_split_under_the_size_bound(
    conn: psycopg.Connection[Any], limit: int, series: int, pad: int
) -> None:
    project = uuid.uuid4()
    conn.execute("update metrics.config set publish_max_bytes = %s", (limit,))
    try:
        set_interval(conn, project, "1 hour")
        ingest(conn, batch(project, [counter("warmup_total", 1)]))
        ingest(
            conn,
            batch(
                project,
                [
                    counter("hits_total", 1, {"path": f"/api/hooks/{i:04d}", "pad": "x" * pad})
                    for i in range(series)
                ],
            ),
        )
        conn.execute(
            "update metrics.publish_state set last_sent_at = '-infinity' where project_id = %s", (project,)
        )
        sent = conn.execute("select metrics.publish_pending()").fetchone()
        assert sent is not None and sent[0] > 1
        parts = messages(conn, project)[1:]
        sizes = [
            len(row[0])
            for row in conn.execute(
                "select payload::text from realtime.messages where topic = %s and (payload->>'seq')::int = 2",
                (f"metrics:{project}",),
            )
        ]
    finally:
        conn.execute("update metrics.config set publish_max_bytes = default")
    assert len(parts) == sent[0] and all(p["parts"] == sent[0] and p["seq"] == 2 for p in parts)
    assert sorted(p["part"] for p in parts) == list(range(1, sent[0] + 1))
    assert max(sizes) <= limit
    assert sum(len(p["series"]) for p in parts) == series, "every changed series is in exactly one part"


def test_publish_failure_is_not_silent_when_realtime_cannot_store(
    conn: psycopg.Connection[Any], fresh_db: TestDatabase
) -> None:
    """realtime.send turns errors into warnings; the queue must not be lost with the message."""
    project = uuid.uuid4()
    with psycopg.connect(fresh_db.admin_url, autocommit=True) as admin:
        partitions = [
            r[0]
            for r in admin.execute(
                "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid"
                " where i.inhparent = 'realtime.messages'::regclass"
            )
        ]
        for name in partitions:
            admin.execute(f"alter table realtime.messages detach partition realtime.{name}")
        try:
            ingest(conn, batch(project, [counter("hits_total", 1)]))
            assert messages(conn, project) == []
            queued = conn.execute(
                "select count(*) from metrics.publish_queue where project_id = %s", (project,)
            ).fetchone()
        finally:
            for name in partitions:
                admin.execute(
                    f"alter table realtime.messages attach partition realtime.{name}"
                    f" for values from ('{name[9:].replace('_', '-')}') to ('{name[9:].replace('_', '-')}'::date + 1)"
                )
    assert queued == (1,), "the change stays queued for the next publish"
    conn.execute(
        "update metrics.publish_state set last_sent_at = '-infinity' where project_id = %s", (project,)
    )
    conn.execute("select metrics.publish_pending()")
    assert len(messages(conn, project)) == 1
