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
from urllib.parse import urlsplit

import httpx
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
    """The stack's main database has pg_cron (Debian's 1.4: minute schedules only), so the migration scheduled it:
    maintenance, and a job per lane of the rollup pass, which follow the number of lanes."""
    jobs_sql = (
        "select jobname, schedule, command from cron.job where jobname like 'meshhook-metrics-%' order by 1"
    )
    with psycopg.connect(env_of(state_dir)["DATABASE_URL"], autocommit=True) as conn:
        jobs = conn.execute(jobs_sql).fetchall()
        note = conn.execute("select metrics.schedule_maintenance()").fetchone()
        try:
            conn.execute("select metrics.set_pass_lanes(3)")
            three = conn.execute(jobs_sql).fetchall()
            conn.execute("select metrics.set_pass_lanes(1)")
            one = conn.execute(jobs_sql).fetchall()
        finally:
            conn.execute("select metrics.set_pass_lanes(2)")
        again = conn.execute(jobs_sql).fetchall()
    maintain = ("meshhook-metrics-maintain", "* * * * *", "select metrics.maintain()")

    def lane(k: int) -> tuple[str, str, str]:
        # a minutely job per lane, each a rollup pass every second: more often than a minute under any pg_cron
        name = "meshhook-metrics-publish" + (f"-lane-{k}" if k else "")
        return (name, "* * * * *", f"call metrics.run_rollup_passes(55, 1, {k})")

    assert jobs == again == [maintain, lane(0), lane(1)]
    assert note is not None and "rollup passes every second in 2 lane(s)" in note[0]
    assert three == [maintain, lane(0), lane(1), lane(2)]
    assert one == [maintain, lane(0)], "the jobs of lanes that are gone are unscheduled"


def test_the_pass_interval_an_operator_chose_survives_rescheduling(state_dir: Path) -> None:
    """``schedule_rollup_passes(p_every => s)`` sets every lane's interval; changing the lanes or scheduling
    maintenance again keeps it (they wrote 1 s back before migration 20261207000500); a bad one changes nothing."""
    jobs_sql = (
        "select jobname, command from cron.job where jobname like 'meshhook-metrics-publish%' order by 1"
    )

    def lanes(every: str, n: int) -> list[tuple[str, str]]:
        return [
            (
                "meshhook-metrics-publish" + (f"-lane-{k}" if k else ""),
                f"call metrics.run_rollup_passes(55, {every}, {k})",
            )
            for k in range(n)
        ]

    with psycopg.connect(env_of(state_dir)["DATABASE_URL"], autocommit=True) as conn:
        try:
            # 0.30000000000000004 as a double: written to the millisecond, so that it is read back
            note = conn.execute(
                "select metrics.schedule_rollup_passes(p_every => 0.1::float8 + 0.2::float8)"
            ).fetchone()
            chosen = conn.execute(jobs_sql).fetchall()
            conn.execute("select metrics.set_pass_lanes(3)")
            three = conn.execute(jobs_sql).fetchall()
            conn.execute("select metrics.schedule_maintenance()")
            maintained = conn.execute(jobs_sql).fetchall()
            with pytest.raises(
                psycopg.errors.InvalidParameterValue, match=r"p_every must be in \[0\.1, 60\]"
            ):
                conn.execute("select metrics.schedule_rollup_passes(p_every => 0)")
            refused = conn.execute(jobs_sql).fetchall()
        finally:
            conn.execute("select metrics.set_pass_lanes(2)")
            restored = conn.execute("select metrics.schedule_rollup_passes(p_every => 1)").fetchone()
        again = conn.execute(jobs_sql).fetchall()
    assert note is not None and "rollup passes every 0.3 s in 2 lane(s)" in note[0]
    assert chosen == lanes("0.3", 2)
    assert three == maintained == refused == lanes("0.3", 3)
    assert restored is not None and "rollup passes every second in 2 lane(s)" in restored[0]
    assert again == lanes("1", 2)


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
    stopped = json.loads(run("status", "--state-dir", str(state_dir), "-o", "json").stdout)
    assert stopped["services"]["postgres"] == "stopped"
    assert stopped["data_plane"] == {
        "rollups": "unknown",
        "totals": "unknown",
        "detail": "PostgreSQL is not running",
    }
    assert (
        "rollups: unknown (PostgreSQL is not running)" in run("status", "--state-dir", str(state_dir)).stderr
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


def test_maintain_once_waits_for_a_maintenance_in_progress(state_dir: Path) -> None:
    """The stack's maintain loop (or pg_cron's job) may be running: a run asked for by hand waits for it and
    then reports its own work, instead of 'skipped' (which once failed the test above)."""
    url = env_of(state_dir)["DATABASE_URL"]
    with psycopg.connect(url) as holder:
        holder.execute("select pg_advisory_xact_lock(hashtext('metrics.maintain'))")
        env = {**os.environ, "COLUMNS": "200"}
        asked = subprocess.Popen(
            [*CLI, "maintain", "--db-url", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert asked.stderr is not None
            lines = iter(asked.stderr.readline, "")  # until EOF: a maintain that did not wait exits
            assert any("waiting for it to finish" in line for line in lines)
        finally:
            holder.commit()
        out, err = asked.communicate(timeout=180)
    assert asked.returncode == 0, err
    assert "partitions_created" in json.loads(out)


def test_demo_sends_batches_and_shows_live_aggregates(state_dir: Path) -> None:
    result = run("demo", "--state-dir", str(state_dir), "--seconds", "1.5")
    assert "meshhook_webhook_requests_total" in result.stdout and "demo simulated" in result.stderr


def supervision(state_dir: Path) -> dict[str, dict[str, object]]:
    return json.loads(run("status", "--state-dir", str(state_dir), "-o", "json").stdout)["supervision"]


def wait_for(predicate, what: str, seconds: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    """Polls without asserting on durations (shared machine): the deadline only stops a hung test."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_no_service_has_a_database_password_on_its_command_line(state_dir: Path) -> None:
    """``ps`` shows every argv: the DSNs reach the services through the environment."""
    password = urlsplit(env_of(state_dir)["DATABASE_URL"]).password
    assert password and password != "postgres", "a password generated for this state dir"
    pids = [
        int(pid)
        for details in supervision(state_dir).values()
        for pid in (details["pid"], details["child_pid"])
        if pid
    ]
    assert len(pids) == 10, supervision(state_dir)  # five supervisors, five services
    for pid in pids:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        assert password not in cmdline and "postgresql://" not in cmdline, cmdline


def test_the_gateways_data_api_logs_in_with_the_generated_password(state_dir: Path) -> None:
    env = env_of(state_dir)

    def healthy() -> bool:
        try:
            return httpx.get(env["SUPABASE_URL"] + "/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, "the gateway")
    response = httpx.post(
        env["SUPABASE_URL"] + "/rest/v1/rpc/no_such_function",
        json={},
        headers={"apikey": env["SUPABASE_ANON_KEY"]},
        timeout=30,
    )
    assert response.status_code == 404 and response.json()["code"] == "PGRST202", response.text


def test_status_shows_every_service_supervised(state_dir: Path) -> None:
    details = supervision(state_dir)
    assert set(details) == {"maintain", "gateway", "receiver", "alert-worker", "api"}
    assert all(d["state"] == "running" and d["child_pid"] for d in details.values()), details
    pretty = run("status", "--state-dir", str(state_dir)).stderr
    assert "maintain: running (pid" in pretty and "restarts 0" in pretty
    # the data plane as GET /healthz reads it: a pass that keeps up, a fold that keeps up
    assert "rollups: current (" in pretty and "points not merged yet)" in pretty
    assert "totals: current" in pretty
    plane = json.loads(run("status", "--state-dir", str(state_dir), "-o", "json").stdout)["data_plane"]
    assert plane["rollups"] == "current" and plane["totals"] == "current"
    assert plane["rollup_pending_points"] >= 0


def test_a_detached_service_that_dies_is_restarted_and_status_says_why(state_dir: Path) -> None:
    before = supervision(state_dir)["maintain"]
    os.kill(int(before["child_pid"]), signal.SIGKILL)  # type: ignore[call-overload]
    wait_for(
        lambda: (d := supervision(state_dir)["maintain"])["restarts"] == 1 and d["state"] == "running",
        "maintain to be restarted",
    )
    after = supervision(state_dir)["maintain"]
    assert after["pid"] == before["pid"] and after["child_pid"] != before["child_pid"]
    assert str(after["last_error"]).startswith("killed by SIGKILL")
    assert "restarts 1, last error at" in run("status", "--state-dir", str(state_dir)).stderr


def test_no_key_token_secret_or_password_reaches_the_logs(state_dir: Path) -> None:
    """A captured full run: everything the services wrote since ``up``, after a client used the keys."""
    env = env_of(state_dir)
    from websockets.sync.client import connect

    ws_url = env["SUPABASE_URL"].replace("http", "ws") + "/realtime/v1/websocket"
    with connect(f"{ws_url}?apikey={env['SUPABASE_SERVICE_ROLE_KEY']}&vsn=1.0.0") as socket:
        socket.send(json.dumps({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "1"}))
        socket.recv(timeout=30)
    run("demo", "--state-dir", str(state_dir), "--seconds", "1")
    secrets = {
        "anon key": env["SUPABASE_ANON_KEY"],
        "service key": env["SUPABASE_SERVICE_ROLE_KEY"],
        "JWT secret": env["SUPABASE_JWT_SECRET"],
        "database password": urlsplit(env["DATABASE_URL"]).password,
        "superuser password": (state_dir / "pg" / "superuser-password").read_text().strip(),
        "receiver URL": env["DEMO_RECEIVER_URL"],
    }
    logs = {p.name: p.read_text(errors="replace") for p in (state_dir / "logs").iterdir() if p.is_file()}
    assert {"gateway.log", "maintain.log", "alert-worker.log", "api.log", "receiver.log"} <= set(logs)
    assert "WebSocket /realtime/v1/websocket" in logs["gateway.log"], "the connection was logged"
    leaks = [
        (what, name)
        for what, secret in secrets.items()
        for name, text in logs.items()
        if secret and secret in text
    ]
    assert not leaks, leaks


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
        # a service dies: its supervisor restarts it; the supervisor itself dies: the foreground restarts it
        child = int(supervision(path)["receiver"]["child_pid"])  # type: ignore[call-overload]
        os.kill(child, signal.SIGKILL)
        wait_for(lambda: supervision(path)["receiver"]["restarts"] == 1, "the receiver to be restarted")
        gateway = int(supervision(path)["gateway"]["pid"])  # type: ignore[call-overload]
        os.killpg(gateway, signal.SIGKILL)
        wait_for(
            lambda: (
                supervision(path)["gateway"]["pid"] not in (None, gateway)
                and supervision(path)["gateway"]["child_pid"]
            ),
            "the foreground to start the gateway again",
        )
        assert proc.poll() is None, "one dying service does not tear the stack down"
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


def test_status_says_why_the_data_plane_could_not_be_read_and_keeps_the_password_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A PostgreSQL that runs but refuses the connection (here: psycopg made to fail as it would)."""
    from types import SimpleNamespace

    from meshhook_rt_metrics import cli

    def refuse(*args: object, **kwargs: object) -> None:
        raise psycopg.OperationalError(
            'connection failed: password authentication failed for user "postgres" password=hunter22\nmore'
        )

    monkeypatch.setattr(psycopg, "connect", refuse)
    stack = SimpleNamespace(postgres=SimpleNamespace(running=lambda: True), database_url="postgresql://x")
    plane = cli._data_plane(stack)  # type: ignore[arg-type]
    assert plane["rollups"] == plane["totals"] == "unknown"
    assert plane["detail"].startswith("OperationalError: connection failed: password authentication failed")
    assert "hunter22" not in plane["detail"] and "more" not in plane["detail"]
    lines = cli._data_plane_lines(plane)
    assert lines[0].strip().startswith("rollups: unknown (OperationalError:")
