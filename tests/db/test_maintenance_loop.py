"""``maintain --loop`` outlives every error: a failing pass is logged and retried, publishing goes on.
Also: the local cluster authenticates every connection (TCP and local socket) with the generated passwords."""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

import psycopg
import pytest

from meshhook_rt_metrics.db import maintenance
from meshhook_rt_metrics.localstack.postgres import LocalPostgres
from tests.support import TestDatabase


def wait_for(predicate, what: str, seconds: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_loop_survives_errors_other_than_a_lost_connection(
    db: TestDatabase, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls = {"maintain": 0, "publish": 0}

    def failing_maintain(_conn: psycopg.Connection[Any]) -> dict[str, Any]:
        calls["maintain"] += 1
        if calls["maintain"] <= 2:
            raise RuntimeError("retention exploded")
        return {}

    def counting_pass(conn: psycopg.Connection[Any], lane: int | None = None) -> dict[str, Any]:
        calls["publish"] += 1
        if calls["publish"] == 3:
            conn.execute("select 1/0")  # a SQL error that is not a lost connection
        return {"messages": 0, "behind": False}

    monkeypatch.setattr(maintenance, "maintain_once", failing_maintain)
    monkeypatch.setattr(maintenance, "pass_once", counting_pass)
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            maintenance.run_loop(db.url, publish_every=0.01, maintain_every=0.01, stop=stop)
        except BaseException as exc:
            errors.append(exc)

    caplog.set_level(logging.INFO, logger="meshhook_rt_metrics.db.maintenance")
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: (calls["maintain"] >= 3 and calls["publish"] >= 5) or not thread.is_alive(), "3 passes"
        )
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    assert calls["maintain"] >= 3 and calls["publish"] >= 5, calls
    text = caplog.text
    assert "maintenance failed (1 in a row)" in text and "retention exploded" in text
    # the pass runs in a thread a lane (two by default); the failing call fell to one of them
    assert re.search(r"publish lane [01] failed \(1 in a row\)", text), text
    assert "maintenance recovered after 2 failure(s)" in text


def test_the_local_cluster_refuses_wrong_passwords_on_tcp_and_on_its_socket(
    cluster: LocalPostgres, db: TestDatabase
) -> None:
    with psycopg.connect(db.url) as conn:
        assert conn.execute("select current_user").fetchone() == ("postgres",)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(cluster.url(password="postgres", database=db.name))
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(host=str(cluster.socket_dir), port=cluster.port, user="postgres", dbname=db.name)
    with psycopg.connect(cluster.admin_url()) as admin:
        methods = {row[0] for row in admin.execute("select auth_method from pg_hba_file_rules")}
    assert methods == {"scram-sha-256"}


def _holding_the_maintenance_lock(url: str) -> psycopg.Connection[Any]:
    """A connection whose open transaction holds ``metrics.maintain``'s lock, as a running maintenance does."""
    holder = psycopg.connect(url)
    holder.execute("select pg_advisory_xact_lock(hashtext('metrics.maintain'))")
    return holder


def test_a_maintenance_asked_for_by_hand_waits_for_the_running_one_then_does_its_work(
    db: TestDatabase,
) -> None:
    holder = _holding_the_maintenance_lock(db.url)
    said: list[str] = []
    got: dict[str, Any] = {}
    with psycopg.connect(db.url, autocommit=True) as conn:
        worker = threading.Thread(
            target=lambda: got.update(maintenance.maintain_when_free(conn, 60.0, said.append))
        )
        worker.start()
        wait_for(lambda: said, "the wait to be announced")
        assert worker.is_alive() and not got  # still waiting while the other run holds the lock
        holder.commit()  # the other run ends
        worker.join(60)
    holder.close()
    assert said == ["another maintenance run is in progress"]  # said once, however long the wait
    assert "skipped" not in got and "partitions_created" in got


def test_a_maintenance_that_waits_too_long_reports_it_skipped(db: TestDatabase) -> None:
    holder = _holding_the_maintenance_lock(db.url)
    try:
        with psycopg.connect(db.url, autocommit=True) as conn:
            report = maintenance.maintain_when_free(conn, 0.5)
    finally:
        holder.close()
    assert report == {"skipped": "another maintenance run is in progress"}
