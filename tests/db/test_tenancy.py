"""Cross-tenant matrix: a user of project A can neither read nor write anything of project B.

Tables are enumerated from the catalog, so a table added later is covered without editing this file.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from meshhook_rt_metrics.db.session import as_caller, claims_for_user
from tests.support import TestDatabase, add_member, batch, can_read_topic, counter, histogram, ingest

A, B = uuid.uuid4(), uuid.uuid4()
ALICE, BOB, VIEWER_OF_A, STRANGER = (uuid.uuid4() for _ in range(4))
DENIED = (errors.InsufficientPrivilege,)


@pytest.fixture(scope="module")
def conn(db: TestDatabase) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db.url, autocommit=True) as connection:
        add_member(connection, A, ALICE, "admin")
        add_member(connection, A, VIEWER_OF_A, "viewer")
        add_member(connection, B, BOB, "admin")
        for project in (A, B):
            ingest(
                connection,
                batch(project, [counter("jobs_total", 3, {"q": "x"}), histogram("step_seconds", [0.1, 0.2])]),
            )
            connection.execute("select metrics.maintain()")
        yield connection


def tenant_tables(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """(table, tenant column) for every table of schema metrics that holds per-project rows."""
    return [
        (r[0], r[1])
        for r in conn.execute(
            "select c.relname, a.attname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " join pg_attribute a on a.attrelid = c.oid"
            " where n.nspname = 'metrics' and c.relkind in ('r', 'p') and not c.relispartition"
            " and ((a.attname = 'project_id') or (c.relname = 'projects' and a.attname = 'id'))"
            " order by 1"
        ).fetchall()
    ]


def test_every_metrics_table_has_row_level_security(conn: psycopg.Connection[Any]) -> None:
    unprotected = conn.execute(
        "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = 'metrics' and c.relkind in ('r', 'p') and not c.relrowsecurity"
    ).fetchall()
    assert unprotected == []


def test_the_matrix_covers_the_tenant_tables(conn: psycopg.Connection[Any]) -> None:
    names = {t for t, _ in tenant_tables(conn)}
    assert {
        "projects",
        "project_members",
        "families",
        "series",
        "points",
        "batches",
        "rollup_1m",
        "rollup_1h",
        "rollup_5m",
        "publish_queue",
        "publish_state",
    } <= names


def test_a_user_of_a_reads_nothing_of_b(conn: psycopg.Connection[Any]) -> None:
    for table, column in tenant_tables(conn):
        query = sql.SQL(
            "select count(*) filter (where {c} = %s), count(*) filter (where {c} = %s) from metrics.{t}"
        ).format(c=sql.Identifier(column), t=sql.Identifier(table))
        try:
            with as_caller(conn, claims_for_user(str(ALICE))):
                own, other = conn.execute(query, (A, B)).fetchone() or (0, 0)
        except DENIED:
            continue  # not readable at all by signed-in users
        assert other == 0, f"{table}: ALICE sees project B rows"
        if table in {"series", "rollup_1m", "points", "families"}:
            assert own > 0, f"{table}: ALICE should see her own project's rows"


def test_a_user_of_a_changes_nothing_of_b(conn: psycopg.Connection[Any]) -> None:
    before = {
        t: conn.execute(
            sql.SQL("select md5(string_agg(x::text, ',' order by x::text)) from metrics.{} x").format(
                sql.Identifier(t)
            )
        ).fetchone()
        for t, _ in tenant_tables(conn)
    }
    for table, column in tenant_tables(conn):
        where = sql.SQL("where {} = %s").format(sql.Identifier(column))
        for statement in (
            sql.SQL("delete from metrics.{t} ").format(t=sql.Identifier(table)) + where,
            sql.SQL("update metrics.{t} set {c} = {c} ").format(
                t=sql.Identifier(table), c=sql.Identifier(column)
            )
            + where,
        ):
            try:
                with as_caller(conn, claims_for_user(str(ALICE))):
                    cur = conn.execute(statement, (B,))
                    assert cur.rowcount == 0, f"{table}: ALICE changed project B rows"
            except DENIED:
                pass
    after = {
        t: conn.execute(
            sql.SQL("select md5(string_agg(x::text, ',' order by x::text)) from metrics.{} x").format(
                sql.Identifier(t)
            )
        ).fetchone()
        for t, _ in tenant_tables(conn)
    }
    changed = {t for t in before if before[t] != after[t] and t not in {"publish_queue", "publish_state"}}
    assert changed == set()


def test_a_user_of_a_cannot_join_b(conn: psycopg.Connection[Any]) -> None:
    with (
        pytest.raises((errors.InsufficientPrivilege, errors.CheckViolation)),
        as_caller(conn, claims_for_user(str(ALICE))),
    ):
        conn.execute(
            "insert into metrics.project_members (project_id, user_id, role) values (%s, %s, 'admin')",
            (B, ALICE),
        )


def test_a_user_of_a_cannot_ingest_into_b(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(errors.InsufficientPrivilege), as_caller(conn, claims_for_user(str(ALICE))):
        ingest(conn, batch(B, [counter("jobs_total", 1, {"q": "x"})]))


def test_a_user_of_a_cannot_write_raw_rows_into_b(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(errors.InsufficientPrivilege), as_caller(conn, claims_for_user(str(ALICE))):
        conn.execute(
            "insert into metrics.points (project_id, series_id, ts, source, batch_id, count, sum)"
            " values (%s, 1, now(), 's', 'b', 1, 1)",
            (B,),
        )


def test_query_of_b_by_a_user_of_a_is_empty(conn: psycopg.Connection[Any]) -> None:
    with as_caller(conn, claims_for_user(str(ALICE))):
        own = conn.execute(
            "select count(*) from metrics.query(%s, 'jobs_total', now() - interval '1 hour', now() + interval '1 minute')",
            (A,),
        ).fetchone()
        other = conn.execute(
            "select count(*) from metrics.query(%s, 'jobs_total', now() - interval '1 hour', now() + interval '1 minute')",
            (B,),
        ).fetchone()
    assert own == (1,) and other == (0,)


@pytest.mark.parametrize(
    ("who", "topic_of", "allowed"),
    [
        pytest.param(ALICE, A, True, id="admin-own-topic"),
        pytest.param(VIEWER_OF_A, A, True, id="viewer-own-topic"),
        pytest.param(ALICE, B, False, id="admin-other-topic"),
        pytest.param(STRANGER, A, False, id="non-member"),
    ],
)
def test_realtime_topic_authorisation(
    conn: psycopg.Connection[Any], who: uuid.UUID, topic_of: uuid.UUID, allowed: bool
) -> None:
    assert can_read_topic(conn, claims_for_user(str(who)), f"metrics:{topic_of}") is allowed


def test_anon_and_malformed_topics_are_refused(conn: psycopg.Connection[Any]) -> None:
    assert not can_read_topic(conn, {"role": "anon"}, f"metrics:{A}")
    assert not can_read_topic(conn, claims_for_user(str(ALICE)), f"metrics:{A}x")
    assert not can_read_topic(conn, claims_for_user(str(ALICE)), "metrics:")


def test_nobody_may_send_on_a_metrics_topic(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(errors.InsufficientPrivilege), as_caller(conn, claims_for_user(str(ALICE))):
        conn.execute("select set_config('realtime.topic', %s, true)", (f"metrics:{A}",))
        conn.execute(
            "insert into realtime.messages (topic, extension, private, payload, event)"
            " values (%s, 'broadcast', true, %s, 'rollup')",
            (f"metrics:{A}", json.dumps({"forged": True})),
        )


def test_membership_is_one_function_an_installation_can_rewire(fresh_db: TestDatabase) -> None:
    """MeshHook's rule: projects owned by auth.uid() in its own table. Replace metrics.membership, nothing else."""
    owner = uuid.uuid4()
    project = uuid.uuid4()
    with psycopg.connect(fresh_db.url, autocommit=True) as conn:
        ingest(conn, batch(project, [counter("jobs_total", 1)]))
        conn.execute("create table public.projects (id uuid primary key, user_id uuid not null)")
        conn.execute("insert into public.projects values (%s, %s)", (project, owner))
        with as_caller(conn, claims_for_user(str(owner))):
            assert conn.execute("select count(*) from metrics.series").fetchone() == (0,)
        conn.execute(
            "create or replace function metrics.membership(p_user_id uuid) returns table (project_id uuid, role text)"
            " language sql stable security definer set search_path = ''"
            " as $$ select p.id, 'admin'::text from public.projects p where p.user_id = p_user_id $$"
        )
        with as_caller(conn, claims_for_user(str(owner))):
            assert conn.execute("select count(*) from metrics.series").fetchone() == (1,)
            assert (
                ingest(conn, batch(project, [counter("jobs_total", 1)], batch_id=f"t{time.time()}"))["status"]
                == "accepted"
            )
        assert can_read_topic(conn, claims_for_user(str(owner)), f"metrics:{project}")


def test_a_caller_transaction_can_see_one_snapshot(conn: psycopg.Connection[Any], db: TestDatabase) -> None:
    """``one_snapshot``: a row committed by someone else between two statements is not seen by the second."""
    with as_caller(conn, claims_for_user(str(ALICE)), one_snapshot=True):
        level = conn.execute("show transaction_isolation").fetchone()
        before = conn.execute("select count(*) from metrics.projects").fetchone()
        with psycopg.connect(db.url, autocommit=True) as other:
            add_member(other, uuid.uuid4(), ALICE, "viewer")
        assert conn.execute("select count(*) from metrics.projects").fetchone() == before
    assert level == ("repeatable read",)
    with as_caller(conn, claims_for_user(str(ALICE))):
        assert conn.execute("select count(*) from metrics.projects").fetchone()[0] == before[0] + 1  # type: ignore[index]
