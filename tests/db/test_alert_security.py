"""The alert worker's data plane, tenant by tenant and role by role.

Every table the worker added (instances, the outbox of notifications and messages, leases, mute windows) and
every function it added, seen by a user of another project, by anon, and by each role of the project: who
reads what, who writes what, and that nothing carries a receiver's target or secret to signed-in users. The
rows come from the worker's own path: data is ingested, ``claim_alert_leases`` + ``evaluate_alerts`` run as
the service role and fire a rule, ``claim_alert_deliveries`` turns the outbox into a claimed message.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import errors

from meshhook_rt_metrics.db.session import as_caller
from tests.support import TestDatabase, add_member, batch, counter, ingest, user_claims

A, B = uuid.uuid4(), uuid.uuid4()
ADMIN_A, EDITOR_A, VIEWER_A, ADMIN_B, STRANGER = (uuid.uuid4() for _ in range(5))
SERVICE: dict[str, Any] = {"role": "service_role"}
ANON: dict[str, Any] = {"role": "anon"}
DENIED = "denied"
WORKER = "alert-security-worker"
# distinctive strings: none of them may reach a signed-in user or a broadcast
TARGETS = {A: "https://receiver-a-q7x2.example/hook", B: "https://receiver-b-k9w4.example/hook"}
SECRETS = {A: "secret-a-8f1d2c7e", B: "secret-b-3b9a6e0f"}
LOCKED_BY = "delivery-worker-lock-5e2a"
SERVICE_ONLY_TABLES = ("alert_instances", "alert_notifications", "alert_messages", "alert_leases")
NEW_TABLES = (*SERVICE_ONLY_TABLES, "alert_mute_windows")


@dataclass(frozen=True)
class World:
    conn: psycopg.Connection[Any]
    rules: dict[uuid.UUID, uuid.UUID]
    receivers: dict[uuid.UUID, uuid.UUID]
    evaluations: dict[uuid.UUID, dict[str, Any]]


def attempt(
    conn: psycopg.Connection[Any], claims: Mapping[str, Any], statement: str, params: Any = ()
) -> int | str:
    """Rows a statement affected as the caller (rolled back), or DENIED when it raised 42501."""
    outcome: int | str = -1
    try:
        with as_caller(conn, claims):
            outcome = conn.execute(statement, params).rowcount
            raise psycopg.Rollback()
    except errors.InsufficientPrivilege:
        return DENIED
    return outcome


def fetch(conn: psycopg.Connection[Any], claims: Mapping[str, Any], query: str, params: Any = ()) -> Any:
    """The first column of the first row of a query as the caller, or DENIED when it raised 42501."""
    try:
        with as_caller(conn, claims):
            row = conn.execute(query, params).fetchone()
    except errors.InsufficientPrivilege:
        return DENIED
    return None if row is None else row[0]


def count(conn: psycopg.Connection[Any], claims: Mapping[str, Any], table: str, project: uuid.UUID) -> Any:
    return fetch(conn, claims, f"select count(*) from metrics.{table} where project_id = %s", (project,))


def owner_count(conn: psycopg.Connection[Any], table: str, project: uuid.UUID) -> int:
    row = conn.execute(f"select count(*) from metrics.{table} where project_id = %s", (project,)).fetchone()
    assert row is not None
    return int(row[0])


def snapshot(conn: psycopg.Connection[Any]) -> dict[str, str | None]:
    """Every new table's content (and the rules'), as the owner sees it."""
    return {
        table: conn.execute(
            f"select md5(string_agg(x::text, ',' order by x::text)) from metrics.{table} x"
        ).fetchone()[0]  # type: ignore[index]
        for table in (*NEW_TABLES, "alert_rules", "alert_events")
    }


def an_instance(project: uuid.UUID, rule: uuid.UUID) -> tuple[str, tuple[Any, ...]]:
    return (
        "insert into metrics.alert_instances (project_id, rule_id, fingerprint, labels, state, evaluated_at)"
        " values (%s, %s, 'forged', '{}', 'firing', now())",
        (project, rule),
    )


def a_notification(project: uuid.UUID, rule: uuid.UUID, receiver: uuid.UUID) -> tuple[str, tuple[Any, ...]]:
    return (
        "insert into metrics.alert_notifications (key, project_id, rule_id, receiver_id, fingerprint, transition, alert)"
        " values ('forged', %s, %s, %s, 'forged', 'firing', '{}')",
        (project, rule, receiver),
    )


def a_message(project: uuid.UUID, rule: uuid.UUID, receiver: uuid.UUID) -> tuple[str, tuple[Any, ...]]:
    return (
        "insert into metrics.alert_messages (key, project_id, rule_id, receiver_id, thread_key, kind, body)"
        " values ('forged', %s, %s, %s, 't', 'test', '{}')",
        (project, rule, receiver),
    )


def a_lease(project: uuid.UUID) -> tuple[str, tuple[Any, ...]]:
    return (
        "insert into metrics.alert_leases (project_id, owner, epoch, expires_at)"
        " values (%s, 'forged', 99, now() + interval '1 hour')"
        " on conflict (project_id) do update set owner = excluded.owner, epoch = excluded.epoch",
        (project,),
    )


def a_mute_window(project: uuid.UUID, name: str = "forged") -> tuple[str, tuple[Any, ...]]:
    return (
        "insert into metrics.alert_mute_windows (project_id, name, start_time, end_time, time_zone)"
        " values (%s, %s, '01:00', '02:00', 'UTC')",
        (project, name),
    )


def inserts(world: World, project: uuid.UUID) -> dict[str, tuple[str, tuple[Any, ...]]]:
    rule, receiver = world.rules[project], world.receivers[project]
    return {
        "alert_instances": an_instance(project, rule),
        "alert_notifications": a_notification(project, rule, receiver),
        "alert_messages": a_message(project, rule, receiver),
        "alert_leases": a_lease(project),
        "alert_mute_windows": a_mute_window(project),
    }


UPDATES = {
    "alert_instances": "update metrics.alert_instances set state = 'inactive' where project_id = %s",
    "alert_notifications": "update metrics.alert_notifications set status = 'silenced' where project_id = %s",
    "alert_messages": "update metrics.alert_messages set status = 'dead' where project_id = %s",
    "alert_leases": "update metrics.alert_leases set owner = 'forged' where project_id = %s",
    "alert_mute_windows": "update metrics.alert_mute_windows set name = name || '-x' where project_id = %s",
}


@pytest.fixture(scope="module")
def world(db: TestDatabase) -> Iterator[World]:
    with psycopg.connect(db.url, autocommit=True) as conn:
        add_member(conn, A, ADMIN_A, "admin")
        add_member(conn, A, EDITOR_A, "editor")
        add_member(conn, A, VIEWER_A, "viewer")
        add_member(conn, B, ADMIN_B, "admin")
        rules: dict[uuid.UUID, uuid.UUID] = {}
        receivers: dict[uuid.UUID, uuid.UUID] = {}
        for project in (A, B):
            receivers[project] = conn.execute(
                "insert into metrics.alert_receivers (project_id, name, kind, target, secret)"
                " values (%s, 'hook', 'webhook', %s, %s) returning id",
                (project, TARGETS[project], SECRETS[project]),
            ).fetchone()[0]  # type: ignore[index]
            rules[project] = conn.execute(
                "insert into metrics.alert_rules (project_id, name, metric, agg, op, threshold, annotations, labels)"
                " values (%s, 'jobs-high', 'jobs_total', 'sum', '>', 1, %s, '{\"team\": \"core\"}') returning id",
                (project, json.dumps({"summary": "{{ value }} jobs on {{ labels.q }}"})),
            ).fetchone()[0]  # type: ignore[index]
            conn.execute(
                "select metrics.set_alert_rule_receivers(%s, array[%s]::uuid[])",
                (rules[project], receivers[project]),
            )
            # a daily window two to three hours from now: it never mutes this test's notifications
            conn.execute(
                "insert into metrics.alert_mute_windows (project_id, name, start_time, end_time, time_zone)"
                " values (%s, 'later', ((now() + interval '2 hours') at time zone 'UTC')::time,"
                " ((now() + interval '3 hours') at time zone 'UTC')::time, 'UTC')",
                (project,),
            )
            accepted = ingest(
                conn,
                batch(
                    project,
                    # a minute that is over: data time is its end, and it is the open (first unsettled) minute
                    [counter("jobs_total", 10, {"q": "x"}, ts=time.time() - 120)],
                    batch_id=f"alert-security-{uuid.uuid4()}",
                ),
            )
            assert accepted["status"] == "accepted", accepted
        with as_caller(conn, SERVICE):
            leases = dict(
                conn.execute("select project_id, epoch from metrics.claim_alert_leases(%s)", (WORKER,))
            )
        assert set(leases) == {A, B}, leases
        evaluations = {}
        for project in (A, B):
            with as_caller(conn, SERVICE):
                evaluations[project] = conn.execute(
                    "select metrics.evaluate_alerts(%s, %s, %s)", (project, WORKER, leases[project])
                ).fetchone()[0]  # type: ignore[index]
        with as_caller(conn, SERVICE):
            claimed = conn.execute(
                "select receiver_id, target, secret from metrics.claim_alert_deliveries(%s, 10)", (LOCKED_BY,)
            ).fetchall()
        # the delivery worker, and only it, gets what sending needs
        assert sorted(claimed) == sorted((receivers[p], TARGETS[p], SECRETS[p]) for p in (A, B))
        # a silence of B after the fact (B's notification went out already): for the alert_silenced leak check
        conn.execute(
            "insert into metrics.alert_silences (project_id, rule_id, starts_at, ends_at)"
            " values (%s, %s, now() - interval '1 minute', now() + interval '1 hour')",
            (B, rules[B]),
        )
        yield World(conn=conn, rules=rules, receivers=receivers, evaluations=evaluations)


@pytest.fixture(scope="module")
def conn(world: World) -> psycopg.Connection[Any]:
    return world.conn


def test_the_worker_path_filled_every_new_table_for_both_projects(world: World) -> None:
    """The checks below are not vacuous: each project has rows in every new table, written by the worker."""
    for project in (A, B):
        transitions = world.evaluations[project]["transitions"]
        assert [(t["rule_id"], t["state"], t["previous"]) for t in transitions] == [
            (str(world.rules[project]), "firing", "inactive")
        ]
        for table in NEW_TABLES:
            assert owner_count(world.conn, table, project) >= 1, (table, project)
        assert owner_count(world.conn, "alert_events", project) == 1
    locked = world.conn.execute(
        "select count(*) from metrics.alert_messages where locked_by = %s", (LOCKED_BY,)
    )
    assert locked.fetchone() == (2,)


# another project's user, anon ------------------------------------------------------------------------------


@pytest.mark.parametrize("table", [*NEW_TABLES, "alert_events", "alert_rules"])
def test_a_user_of_b_reads_nothing_of_a(conn: psycopg.Connection[Any], table: str) -> None:
    """Row-level security hides A's rows from B's admin, who sees B's own (leases: nobody but the service role)."""
    own, other = count(conn, user_claims(ADMIN_B), table, B), count(conn, user_claims(ADMIN_B), table, A)
    if table == "alert_leases":
        assert (own, other) == (DENIED, DENIED)
    else:
        assert (own, other) == (owner_count(conn, table, B), 0)
        assert own >= 1


@pytest.mark.parametrize("table", NEW_TABLES)
def test_a_user_of_b_cannot_insert_rows_of_a(world: World, table: str) -> None:
    statement, params = inserts(world, A)[table]
    assert attempt(world.conn, user_claims(ADMIN_B), statement, params) == DENIED


@pytest.mark.parametrize("table", NEW_TABLES)
def test_a_user_of_b_changes_and_deletes_nothing_of_a(conn: psycopg.Connection[Any], table: str) -> None:
    before = snapshot(conn)
    updated = attempt(conn, user_claims(ADMIN_B), UPDATES[table], (A,))
    deleted = attempt(conn, user_claims(ADMIN_B), f"delete from metrics.{table} where project_id = %s", (A,))
    if table == "alert_mute_windows":
        assert (updated, deleted) == (0, 0)  # writable by B's editors, but A's rows are not B's
    else:
        assert (updated, deleted) == (DENIED, DENIED)
    assert snapshot(conn) == before


def test_a_user_of_b_cannot_change_the_new_rule_settings_of_a(world: World) -> None:
    updated = attempt(
        world.conn,
        user_claims(ADMIN_B),
        "update metrics.alert_rules set keep_firing_for = '1 hour', no_data_policy = 'alerting',"
        " labels = '{\"x\": \"y\"}', repeat_interval = '1 minute' where id = %s",
        (world.rules[A],),
    )
    assert updated == 0


def test_a_user_of_b_cannot_make_a_mute_window_of_a_rule_of_a(world: World) -> None:
    with pytest.raises(errors.ForeignKeyViolation), as_caller(world.conn, user_claims(ADMIN_B)):
        world.conn.execute(
            "insert into metrics.alert_mute_windows (project_id, rule_id, name, start_time, end_time, time_zone)"
            " values (%s, %s, 'cross', '01:00', '02:00', 'UTC')",
            (B, world.rules[A]),
        )


@pytest.mark.parametrize("table", NEW_TABLES)
def test_anon_can_do_nothing_with_the_new_tables(world: World, table: str) -> None:
    statement, params = inserts(world, A)[table]
    assert count(world.conn, ANON, table, A) == DENIED
    assert attempt(world.conn, ANON, statement, params) == DENIED
    assert attempt(world.conn, ANON, UPDATES[table], (A,)) == DENIED
    assert attempt(world.conn, ANON, f"delete from metrics.{table} where project_id = %s", (A,)) == DENIED


# the roles of the project ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "table", ["alert_instances", "alert_messages", "alert_notifications", "alert_mute_windows"]
)
def test_a_viewer_of_a_reads_its_projects_rows(conn: psycopg.Connection[Any], table: str) -> None:
    assert count(conn, user_claims(VIEWER_A), table, A) == owner_count(conn, table, A) >= 1
    assert count(conn, user_claims(VIEWER_A), table, B) == 0


def test_a_viewer_reads_the_new_history_columns(world: World) -> None:
    row = fetch(
        world.conn,
        user_claims(VIEWER_A),
        "select array[state, previous, fingerprint] from metrics.alert_events where rule_id = %s",
        (world.rules[A],),
    )
    fingerprint = world.conn.execute(
        "select fingerprint from metrics.alert_instances where rule_id = %s", (world.rules[A],)
    ).fetchone()
    assert fingerprint is not None
    assert row == ["firing", "inactive", fingerprint[0]]


@pytest.mark.parametrize("who", [VIEWER_A, EDITOR_A, ADMIN_A], ids=["viewer", "editor", "admin"])
@pytest.mark.parametrize("table", SERVICE_ONLY_TABLES)
def test_only_the_service_role_writes_instances_outbox_and_leases(
    world: World, table: str, who: uuid.UUID
) -> None:
    """Not even an admin of A writes them; the service role does (so the statements themselves are valid)."""
    statement, params = inserts(world, A)[table]
    delete = f"delete from metrics.{table} where project_id = %s"
    assert attempt(world.conn, user_claims(who), statement, params) == DENIED
    assert attempt(world.conn, user_claims(who), UPDATES[table], (A,)) == DENIED
    assert attempt(world.conn, user_claims(who), delete, (A,)) == DENIED
    assert attempt(world.conn, SERVICE, statement, params) == 1
    assert attempt(world.conn, SERVICE, UPDATES[table], (A,)) == owner_count(world.conn, table, A) >= 1


def test_a_viewer_cannot_write_mute_windows(world: World) -> None:
    statement, params = a_mute_window(A, "viewer-window")
    assert attempt(world.conn, user_claims(VIEWER_A), statement, params) == DENIED
    assert attempt(world.conn, user_claims(VIEWER_A), UPDATES["alert_mute_windows"], (A,)) == 0
    assert (
        attempt(
            world.conn,
            user_claims(VIEWER_A),
            "delete from metrics.alert_mute_windows where project_id = %s",
            (A,),
        )
        == 0
    )


def test_an_editor_writes_mute_windows_of_its_project_only(world: World) -> None:
    conn, editor = world.conn, user_claims(EDITOR_A)
    with as_caller(conn, editor):
        window = conn.execute(
            "insert into metrics.alert_mute_windows (project_id, rule_id, name, weekdays, start_time, end_time, time_zone)"
            " values (%s, %s, 'deploys', '{2,4}', '22:00', '02:00', 'Europe/Berlin') returning id, created_by",
            (A, world.rules[A]),
        ).fetchone()
        assert window is not None and window[1] == EDITOR_A
        renamed = conn.execute(
            "update metrics.alert_mute_windows set name = 'deploys-2', end_time = '03:00' where id = %s",
            (window[0],),
        )
        assert renamed.rowcount == 1
        assert (
            conn.execute("delete from metrics.alert_mute_windows where id = %s", (window[0],)).rowcount == 1
        )
    statement, params = a_mute_window(B, "editor-of-a")
    assert attempt(conn, editor, statement, params) == DENIED
    # a window cannot be moved to another project or rule (no update grant on those columns)
    assert attempt(
        conn, editor, "update metrics.alert_mute_windows set project_id = %s where project_id = %s", (B, A)
    ) == (DENIED)
    assert attempt(
        conn, editor, "update metrics.alert_mute_windows set rule_id = null where project_id = %s", (A,)
    ) == (DENIED)


def test_editors_change_the_new_rule_settings_and_viewers_do_not(world: World) -> None:
    statement = (
        "update metrics.alert_rules set keep_firing_for = '1 minute', resolve_threshold = 0.5 where id = %s"
    )
    assert attempt(world.conn, user_claims(VIEWER_A), statement, (world.rules[A],)) == 0
    assert attempt(world.conn, user_claims(EDITOR_A), statement, (world.rules[A],)) == 1


@pytest.mark.parametrize("who", [VIEWER_A, ADMIN_A], ids=["viewer", "admin"])
@pytest.mark.parametrize(
    "query",
    [
        "select locked_by from metrics.alert_messages",
        "select locked_until from metrics.alert_messages",
        "select * from metrics.alert_messages",
        "select m from metrics.alert_messages m",
        "select count(*) from metrics.alert_messages where locked_by = 'x'",
    ],
)
def test_members_cannot_read_who_holds_a_message(
    conn: psycopg.Connection[Any], who: uuid.UUID, query: str
) -> None:
    assert fetch(conn, user_claims(who), query) == DENIED
    readable = fetch(conn, user_claims(who), "select count(status) from metrics.alert_messages")
    assert readable == owner_count(conn, "alert_messages", A) >= 1


def test_nothing_a_member_can_read_holds_a_target_secret_or_lock(conn: psycopg.Connection[Any]) -> None:
    """Instances, outbox rows, messages (granted columns), history and mute windows, as A's admin."""
    readable = fetch(
        conn,
        user_claims(ADMIN_A),
        "select concat_ws('|',"
        " (select string_agg(x::text, ',') from metrics.alert_instances x),"
        " (select string_agg(x::text, ',') from metrics.alert_notifications x),"
        " (select string_agg(concat_ws(',', id, key, project_id, rule_id, receiver_id, kind, body, status, attempts,"
        "   next_attempt_at, last_status, last_error, created_at, sent_at), ',') from metrics.alert_messages),"
        " (select string_agg(x::text, ',') from metrics.alert_events x),"
        " (select string_agg(x::text, ',') from metrics.alert_mute_windows x))",
    )
    assert "jobs-high" in readable and "firing" in readable
    for secret in (*TARGETS.values(), *SECRETS.values(), LOCKED_BY):
        assert secret not in readable


# functions --------------------------------------------------------------------------------------------------

SERVICE_FUNCTIONS = {
    "claim_alert_leases": "select * from metrics.claim_alert_leases('intruder')",
    "release_alert_leases": "select metrics.release_alert_leases(%(worker)s)",
    "check_alert_lease": "select metrics.check_alert_lease(%(a)s, %(worker)s, 1)",
    "evaluate_alerts": "select metrics.evaluate_alerts(%(a)s, %(worker)s, 1)",
    "claim_alert_deliveries": "select * from metrics.claim_alert_deliveries('intruder')",
    "finish_alert_delivery": "select metrics.finish_alert_delivery(1, %(lock)s, true)",
    "assemble_alert_messages": "select metrics.assemble_alert_messages()",
    "assemble_alert_repeats": "select metrics.assemble_alert_repeats()",
    "record_alert_transition": "select metrics.record_alert_transition("
    "(select r from metrics.alert_rules r where r.project_id = %(a)s limit 1),"
    " 'f', '{}', 'inactive', 'firing', 1, now(), now())",
    "alert_group_body": "select metrics.alert_group_body((select r from metrics.alert_rules r limit 1), 'x', '[]')",
    "alert_data_time": "select metrics.alert_data_time(%(a)s)",
}


@pytest.mark.parametrize("who", [ADMIN_A, ADMIN_B], ids=["admin-of-a", "admin-of-b"])
@pytest.mark.parametrize("function", sorted(SERVICE_FUNCTIONS))
def test_signed_in_users_cannot_execute_the_service_functions(
    conn: psycopg.Connection[Any], function: str, who: uuid.UUID
) -> None:
    params = {"a": A, "worker": WORKER, "lock": LOCKED_BY}
    with pytest.raises(errors.InsufficientPrivilege) as raised, as_caller(conn, user_claims(who)):
        conn.execute(SERVICE_FUNCTIONS[function], params)
    assert raised.value.sqlstate == "42501"
    assert f"permission denied for function {function}" in str(raised.value)


@pytest.mark.parametrize(
    "query",
    [
        "select * from metrics.preview_alert_rule(%(rule)s, now() - interval '1 hour', now())",
        "select metrics.queue_test_alert(%(receiver)s)",
        "select metrics.alert_muted(%(a)s, null, now())",
        "select metrics.template_names_problem('{}', null, '{}')",
    ],
)
def test_anon_cannot_execute_the_new_functions(world: World, query: str) -> None:
    params = {"rule": world.rules[A], "receiver": world.receivers[A], "a": A}
    with pytest.raises(errors.InsufficientPrivilege), as_caller(world.conn, ANON):
        world.conn.execute(query, params)


def test_service_functions_and_secret_columns_are_out_of_reach_of_signed_in_users(
    conn: psycopg.Connection[Any],
) -> None:
    """From the catalog: no function authenticated may execute returns a target, secret or lock column, and
    none of the worker's functions is among them."""
    leaking = conn.execute(
        "select p.oid::regprocedure::text from pg_proc p"
        " where p.pronamespace = 'metrics'::regnamespace"
        " and pg_catalog.has_function_privilege('authenticated', p.oid, 'execute')"
        " and p.proargnames && array['target', 'secret', 'locked_by', 'locked_until']"
    ).fetchall()
    assert leaking == []
    executable = {
        r[0]
        for r in conn.execute(
            "select p.proname::text from pg_proc p where p.pronamespace = 'metrics'::regnamespace"
            " and pg_catalog.has_function_privilege('authenticated', p.oid, 'execute')"
        )
    }
    assert executable.isdisjoint(SERVICE_FUNCTIONS)
    assert {"preview_alert_rule", "queue_test_alert", "alert_muted", "alert_next_state"} <= executable
    # the one that does return them is the delivery worker's
    assert conn.execute(
        "select has_function_privilege('service_role', 'metrics.claim_alert_deliveries(text,integer,interval)',"
        " 'execute')"
    ).fetchone() == (True,)


@pytest.mark.parametrize("who", [EDITOR_A, VIEWER_A], ids=["editor", "viewer"])
def test_only_admins_queue_test_notifications(world: World, who: uuid.UUID) -> None:
    before = owner_count(world.conn, "alert_messages", A)
    with pytest.raises(errors.InsufficientPrivilege), as_caller(world.conn, user_claims(who)):
        world.conn.execute("select metrics.queue_test_alert(%s)", (world.receivers[A],))
    assert owner_count(world.conn, "alert_messages", A) == before


def test_an_admin_cannot_queue_a_test_notification_to_a_receiver_of_another_project(world: World) -> None:
    before = owner_count(world.conn, "alert_messages", B)
    with pytest.raises(errors.InsufficientPrivilege), as_caller(world.conn, user_claims(ADMIN_A)):
        world.conn.execute("select metrics.queue_test_alert(%s)", (world.receivers[B],))
    assert owner_count(world.conn, "alert_messages", B) == before


def test_an_admin_queues_a_test_notification_that_carries_no_secret(world: World) -> None:
    with as_caller(world.conn, user_claims(ADMIN_A)):
        message = world.conn.execute("select metrics.queue_test_alert(%s)", (world.receivers[A],)).fetchone()
        assert message is not None
        row = world.conn.execute(
            "select project_id, receiver_id, kind, status, body::text from metrics.alert_messages where id = %s",
            (message[0],),
        ).fetchone()
    assert row is not None and row[:4] == (A, world.receivers[A], "test", "pending")
    assert "TestNotification" in row[4]
    assert TARGETS[A] not in row[4] and SECRETS[A] not in row[4]


@pytest.mark.parametrize("who", [ADMIN_B, STRANGER], ids=["admin-of-b", "no-project"])
def test_preview_of_a_rule_of_another_project_is_not_found(world: World, who: uuid.UUID) -> None:
    rule = world.rules[A]
    denied = pytest.raises(errors.InsufficientPrivilege, match=f"alert rule {rule} not found")
    with denied, as_caller(world.conn, user_claims(who)):
        world.conn.execute(
            "select * from metrics.preview_alert_rule(%s, now() - interval '1 hour', now())", (rule,)
        )


def test_preview_reads_the_rules_own_project_only(world: World) -> None:
    """A rule of A on a metric only B has previews to nothing; the same rule of B fires on B's data (and
    resolves once the point has left the window: a quiet counter is 0)."""
    conn = world.conn
    ingest(
        conn,
        batch(
            B,
            [counter("leak_total", 99, {"who": "b"}, ts=time.time() - 600)],
            batch_id=f"leak-{uuid.uuid4()}",
        ),
    )
    leak = {}
    for project in (A, B):
        leak[project] = conn.execute(
            "insert into metrics.alert_rules (project_id, name, metric, agg, op, threshold)"
            " values (%s, %s, 'leak_total', 'sum', '>', 1) returning id",
            (project, f"leak-{uuid.uuid4()}"),
        ).fetchone()[0]  # type: ignore[index]
    query = "select state, value, labels from metrics.preview_alert_rule(%s, now() - interval '30 minutes', now())"
    with as_caller(conn, user_claims(ADMIN_A)):
        assert conn.execute(query, (leak[A],)).fetchall() == []
    with as_caller(conn, user_claims(ADMIN_B)):
        seen = conn.execute(query, (leak[B],)).fetchall()
    assert [(state, value, labels["who"]) for state, value, labels in seen] == [
        ("firing", 99.0, "b"),
        ("resolved", 0.0, "b"),
    ]


def test_preview_of_a_rule_without_data_runs_as_a_viewer(world: World) -> None:
    """The caller's rule, no data: nothing would have fired (and the function runs for members)."""
    assert (
        fetch(
            world.conn,
            user_claims(VIEWER_A),
            "select count(*) from metrics.preview_alert_rule(%s, now() - interval '2 hours', now() - interval '1 hour')",
            (world.rules[A],),
        )
        == 0
    )


def test_alert_muted_does_not_reveal_the_mute_windows_of_another_project(world: World) -> None:
    query = "select metrics.alert_muted(%s, null, now() + interval '150 minutes')"
    assert fetch(world.conn, user_claims(ADMIN_B), query, (B,)) is True
    assert fetch(world.conn, user_claims(ADMIN_A), query, (B,)) is False


def test_alert_silenced_does_not_reveal_the_silences_of_another_project(world: World) -> None:
    """The rule row is the caller's to make up: row-level security still hides B's silences from A."""
    query = (
        "select metrics.alert_silenced(jsonb_populate_record(null::metrics.alert_rules,"
        " jsonb_build_object('id', %s::uuid, 'project_id', %s::uuid, 'name', 'jobs-high', 'severity', 'warning',"
        " 'labels', '{}'::jsonb)), '{}', now())"
    )
    assert fetch(world.conn, user_claims(ADMIN_B), query, (world.rules[B], B)) is True
    assert fetch(world.conn, user_claims(ADMIN_A), query, (world.rules[B], B)) is False


# the live broadcast --------------------------------------------------------------------------------------------


def alert_broadcasts(conn: psycopg.Connection[Any]) -> list[tuple[str, str, bool, dict[str, Any]]]:
    return [
        (r[0], r[1], r[2], r[3])
        for r in conn.execute(
            "select topic, extension, private, payload from realtime.messages where event = 'alert'"
            " order by inserted_at, id"
        )
    ]


def test_the_alert_broadcast_goes_to_the_projects_topic_only(world: World) -> None:
    broadcasts = alert_broadcasts(world.conn)
    assert sorted(topic for topic, *_ in broadcasts) == sorted([f"metrics:{A}", f"metrics:{B}"])
    for topic, extension, private, payload in broadcasts:
        project = uuid.UUID(payload["project_id"])
        assert topic == f"metrics:{project}"
        assert (extension, private) == ("broadcast", True)
        assert [(t["rule_id"], t["state"], t["notified"]) for t in payload["transitions"]] == [
            (str(world.rules[project]), "firing", True)
        ]
        assert payload["transitions"][0]["labels"] == {
            "q": "x",
            "team": "core",
            "alertname": "jobs-high",
            "severity": "warning",
        }


def test_the_alert_broadcast_carries_no_receiver_target_secret_or_lock(world: World) -> None:
    broadcasts = alert_broadcasts(world.conn)
    assert broadcasts
    for *_, payload in broadcasts:
        text = json.dumps(payload)
        assert "jobs-high" in text
        for secret in (
            *TARGETS.values(),
            *SECRETS.values(),
            LOCKED_BY,
            str(world.receivers[A]),
            str(world.receivers[B]),
        ):
            assert secret not in text


@pytest.mark.parametrize(("who", "visible"), [(ADMIN_A, 1), (VIEWER_A, 1), (ADMIN_B, 0), (STRANGER, 0)])
def test_only_members_receive_the_alert_broadcast(
    conn: psycopg.Connection[Any], who: uuid.UUID, visible: int
) -> None:
    """Realtime's join check on A's topic: the private alert message is readable by A's members only."""
    topic = f"metrics:{A}"
    with as_caller(conn, user_claims(who)):
        conn.execute("select set_config('realtime.topic', %s, true)", (topic,))
        seen = conn.execute(
            "select count(*) from realtime.messages where topic = %s and event = 'alert'", (topic,)
        ).fetchone()
    assert seen == (visible,)
