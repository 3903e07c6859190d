"""metrics.query_horizon, metrics.rollup_revisions and metrics.default_step: what a cache of query results
relies on (migration 20261127000800)."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.support import TestDatabase, add_member, batch, gauge, ingest, roll_up, user_claims

PROJECT, OTHER = uuid.uuid4(), uuid.uuid4()
MEMBER, OUTSIDER = uuid.uuid4(), uuid.uuid4()
START = math.floor(time.time() / 3600) * 3600 - 3 * 3600  # three whole hours of data, ending 1-2 hours ago


@pytest.fixture(scope="module")
def conn(db: TestDatabase) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db.url, autocommit=True) as connection:
        for project in (PROJECT, OTHER):
            points = [
                gauge("depth", float(m % 17), {"q": str(m % 3)}, ts=START + m * 60 + 5) for m in range(180)
            ]
            ingest(connection, batch(project, points))
        add_member(connection, PROJECT, MEMBER, "viewer")
        connection.execute("update metrics.maintenance_state set five_minute_watermark = '-infinity'")
        roll_up(connection)
        yield connection


def horizon(conn: psycopg.Connection[Any], claims: dict[str, Any], project: uuid.UUID) -> Any:
    with conn.transaction():
        conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
        role = (
            "service_role" if claims.get("role") == "service_role" else "authenticated"
        )  # as the Data API would
        conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
        return conn.execute(
            "select revision, settled_until, minutes_from, step from metrics.query_horizon(%s, now() - interval"
            " '1 day', now(), null)",
            (project,),
        ).fetchone()


def test_settled_until_is_the_rolled_up_end_when_nothing_is_late(conn: psycopg.Connection[Any]) -> None:
    revision, settled, minutes_from, step = horizon(conn, user_claims(MEMBER), PROJECT)
    assert revision == 0
    assert settled == conn.execute("select metrics.five_minutes_complete_until()").fetchone()[0]  # type: ignore[index]
    now = conn.execute("select now()").fetchone()[0]  # type: ignore[index]
    assert abs((now - timedelta(days=14)) - minutes_from) < timedelta(
        seconds=60
    )  # the default minute retention
    assert step == timedelta(minutes=5)


def test_callers_who_do_not_see_the_project_get_no_horizon(conn: psycopg.Connection[Any]) -> None:
    assert horizon(conn, user_claims(OUTSIDER), PROJECT) is None
    assert horizon(conn, user_claims(MEMBER), OTHER) is None
    assert horizon(conn, {"role": "anon"}, PROJECT) is None
    assert horizon(conn, {"role": "service_role"}, OTHER) is not None


def test_a_late_point_holds_settled_back_until_maintenance_which_moves_only_its_projects_revision(
    conn: psycopg.Connection[Any],
) -> None:
    late = START + 3600 + 125  # the second hour, third window
    ingest(conn, batch(PROJECT, [gauge("depth", 99.0, {"q": "0"}, ts=late)]))
    revision, settled, _, _ = horizon(conn, user_claims(MEMBER), PROJECT)
    assert (revision, settled) == (0, datetime.fromtimestamp(START + 3600, UTC))  # the late hour's start
    assert horizon(conn, {"role": "service_role"}, OTHER)[:2] == (
        0,
        conn.execute("select metrics.five_minutes_complete_until()").fetchone()[0],  # type: ignore[index]
    )
    roll_up(conn)
    revision, settled, _, _ = horizon(conn, user_claims(MEMBER), PROJECT)
    assert revision > 0
    assert settled == conn.execute("select metrics.five_minutes_complete_until()").fetchone()[0]  # type: ignore[index]
    assert horizon(conn, {"role": "service_role"}, OTHER)[0] == 0
    roll_up(conn)  # nothing late: no change
    assert horizon(conn, user_claims(MEMBER), PROJECT)[0] == revision
    # a revision number is never given twice, even when the project's row is deleted and made again
    conn.execute("delete from metrics.rollup_revisions where project_id = %s", (PROJECT,))
    assert horizon(conn, user_claims(MEMBER), PROJECT)[0] == 0
    ingest(conn, batch(PROJECT, [gauge("depth", 98.0, {"q": "0"}, ts=late)]))
    roll_up(conn)
    assert horizon(conn, user_claims(MEMBER), PROJECT)[0] not in (0, revision)


def test_minutes_from_is_the_shorter_of_minute_and_hour_retention(conn: psycopg.Connection[Any]) -> None:
    """Retention deletes hourly rows past hour retention without a revision: cached steps must not reach
    back that far."""
    now = conn.execute("select now()").fetchone()[0]  # type: ignore[index]
    try:
        conn.execute("update metrics.projects set hour_retention = '2 days' where id = %s", (PROJECT,))
        _, _, minutes_from, _ = horizon(conn, user_claims(MEMBER), PROJECT)
        assert abs((now - timedelta(days=2)) - minutes_from) < timedelta(seconds=60)
        conn.execute(
            "update metrics.projects set hour_retention = null, minute_retention = '3 days' where id = %s",
            (PROJECT,),
        )
        _, _, minutes_from, _ = horizon(conn, user_claims(MEMBER), PROJECT)
        assert abs((now - timedelta(days=3)) - minutes_from) < timedelta(seconds=60)
    finally:
        conn.execute(
            "update metrics.projects set hour_retention = null, minute_retention = null where id = %s",
            (PROJECT,),
        )


@pytest.mark.parametrize("minutes", [1, 30, 90, 299, 301, 1500, 1501, 4321, 18000, 18001, 36000, 200000])
def test_default_step_is_the_step_query_series_takes_when_given_none(
    conn: psycopg.Connection[Any], minutes: int
) -> None:
    to = datetime.fromtimestamp(START + 3 * 3600 - 7, UTC)
    start = to - timedelta(minutes=minutes, seconds=13)
    step = conn.execute("select metrics.default_step(%s, %s)", (start, to)).fetchone()[0]  # type: ignore[index]
    rows = [
        conn.execute(
            "select labels, points from metrics.query_series(%s, 'depth', %s, %s, '[]', %s, 'max')",
            (PROJECT, start, to, s),
        ).fetchall()
        for s in (None, step)
    ]
    assert rows[0] == rows[1]
    assert rows[0], "the range has data"
    epochs = [p[0] for p in rows[0][0][1]]
    gaps = {b - a for a, b in pairwise(epochs)}
    assert min(gaps, default=step.total_seconds()) >= step.total_seconds()
