"""The user's entry points, run as users run them: ``meshhook-metrics up|status|down|maintain|demo``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support import batch, counter, ingest

CLI = [sys.executable, "-m", "meshhook_rt_metrics.cli"]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MESHHOOK_METRICS_DB_PORT": "0", "COLUMNS": "200"}
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=180, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="meshhook-cli-"))
    try:
        yield path
    finally:
        run("down", "--state-dir", str(path), check=False)
        shutil.rmtree(path, ignore_errors=True)


def env_of(state_dir: Path) -> dict[str, str]:
    out = run("status", "--state-dir", str(state_dir), "-o", "env").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_status_before_up_says_what_to_do(state_dir: Path) -> None:
    result = run("status", "--state-dir", str(state_dir / "nowhere"), check=False)
    assert result.returncode == 1
    assert "run 'meshhook-metrics up' first" in result.stderr


def test_up_detached_starts_a_migrated_database_and_the_maintainer(state_dir: Path) -> None:
    result = run("up", "--detach", "--state-dir", str(state_dir))
    assert "migration(s) applied" in result.stderr and "maintain: started" in result.stderr
    env = env_of(state_dir)
    assert f"Dashboard: {env['DASHBOARD_URL']}" in result.stderr
    assert env["DASHBOARD_URL"] == env["METRICS_API_URL"] + "/dashboard/"
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        applied = conn.execute("select count(*) from supabase_migrations.schema_migrations").fetchone()
        user = conn.execute(
            "select current_user, (select rolsuper from pg_roles where rolname = current_user)"
        ).fetchone()
    assert applied is not None and applied[0] >= 7
    assert user == ("postgres", False), "the stack hands out the non-superuser owner role, as Supabase does"
    status = json.loads(run("status", "--state-dir", str(state_dir), "-o", "json").stdout)
    assert status["services"]["postgres"] == "running" and status["services"]["maintain"].startswith(
        "running"
    )


def test_pg_cron_runs_maintenance_where_it_is_installed(state_dir: Path) -> None:
    """The stack's main database has pg_cron (Debian's 1.4: minute schedules only), so the migration scheduled it."""
    with psycopg.connect(env_of(state_dir)["DATABASE_URL"], autocommit=True) as conn:
        jobs = conn.execute("select jobname, schedule, command from cron.job order by jobname").fetchall()
        note = conn.execute("select metrics.schedule_maintenance()").fetchone()
    assert ("meshhook-metrics-maintain", "* * * * *", "select metrics.maintain()") in jobs
    assert note is not None and 'run "meshhook-metrics maintain --loop" for publish sweeps' in note[0]


def test_the_maintainer_publishes_trailing_updates(state_dir: Path) -> None:
    """A burst's last changes arrive without further ingest: the background sweep sends them."""
    project = uuid.uuid4()
    with psycopg.connect(env_of(state_dir)["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(
            "insert into metrics.projects (id, publish_interval) values (%s, '1 second')", (project,)
        )
        ingest(conn, batch(project, [counter("a_total", 1)]))
        ingest(conn, batch(project, [counter("b_total", 1)]))  # inside the interval: queued
        topic = f"metrics:{project}"
        for _ in range(100):
            sent = conn.execute(
                "select count(*) from realtime.messages where topic = %s", (topic,)
            ).fetchone()
            if sent and sent[0] == 2:
                break
            conn.execute("select pg_sleep(0.1)")
        assert sent == (2,)


def test_down_then_up_reuses_the_data(state_dir: Path) -> None:
    project = uuid.uuid4()
    with psycopg.connect(env_of(state_dir)["DATABASE_URL"], autocommit=True) as conn:
        ingest(conn, batch(project, [counter("kept_total", 5)]))
    result = run("down", "--state-dir", str(state_dir))
    assert "PostgreSQL stopped" in result.stderr
    assert (
        json.loads(run("status", "--state-dir", str(state_dir), "-o", "json").stdout)["services"]["postgres"]
        == "stopped"
    )
    result = run("up", "--detach", "--state-dir", str(state_dir))
    assert "0 migration(s) applied" in result.stderr
    with psycopg.connect(env_of(state_dir)["DATABASE_URL"], autocommit=True) as conn:
        kept = conn.execute(
            "select sum(sum) from metrics.rollup_1m where project_id = %s", (project,)
        ).fetchone()
    assert kept == (5.0,)


def test_maintain_once_prints_a_report(state_dir: Path) -> None:
    report = json.loads(run("maintain", "--db-url", env_of(state_dir)["DATABASE_URL"]).stdout)
    assert {"partitions_created", "hours_rolled_up", "minutes_deleted", "messages_published"} <= set(report)


def test_demo_sends_batches_and_shows_live_aggregates(state_dir: Path) -> None:
    result = run("demo", "--state-dir", str(state_dir), "--seconds", "1.5")
    assert "meshhook_webhook_requests_total" in result.stdout and "demo simulated" in result.stderr


def test_migrate_against_an_unreachable_database_fails_clearly() -> None:
    result = run("migrate", "--db-url", "postgresql://postgres:postgres@127.0.0.1:1/postgres", check=False)
    assert result.returncode == 1 and "error:" in result.stderr


def test_foreground_up_runs_every_service_until_stopped() -> None:
    path = Path(tempfile.mkdtemp(prefix="meshhook-fg-"))
    env = {**os.environ, "MESHHOOK_METRICS_DB_PORT": "0"}
    proc = subprocess.Popen(
        [*CLI, "up", "--state-dir", str(path)], stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        services: dict[str, str] = {}
        for _ in range(120):
            if (path / "pg" / "port").exists():
                status = run("status", "--state-dir", str(path), "-o", "json", check=False)
                if status.returncode == 0:
                    services = json.loads(status.stdout)["services"]
                    if services and all(state != "stopped" for state in services.values()):
                        break
            time.sleep(0.5)
        assert services and all(state != "stopped" for state in services.values()), services
        assert {"postgres", "maintain", "gateway"} <= set(services)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr
        assert "PostgreSQL stopped" in stderr
        after = json.loads(run("status", "--state-dir", str(path), "-o", "json").stdout)["services"]
        assert set(after.values()) == {"stopped"}
    finally:
        if proc.poll() is None:
            proc.kill()
        run("down", "--state-dir", str(path), check=False)
        shutil.rmtree(path, ignore_errors=True)
