"""``meshhook-metrics``: run the local stack, apply migrations, run maintenance."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import uuid
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import psycopg
import typer
from pydantic import ValidationError
from rich.console import Console

from meshhook_rt_metrics import logs
from meshhook_rt_metrics.db import health, maintenance, migrator
from meshhook_rt_metrics.localstack.postgres import PostgresError
from meshhook_rt_metrics.localstack.stack import LocalStack
from meshhook_rt_metrics.settings import StackSettings

if TYPE_CHECKING:
    from meshhook_rt_metrics.alerting.settings import AlertSettings

app = typer.Typer(
    help="MeshHook real-time metrics: local stack, migrations, maintenance.", no_args_is_help=True
)
console = Console(stderr=True)

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir", help="Local stack state directory [env: MESHHOOK_METRICS_STATE_DIR; default .meshhook]"
    ),
]


class OutputFormat(StrEnum):
    pretty = "pretty"
    env = "env"
    json = "json"


def _settings() -> StackSettings:
    try:
        return StackSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"MESHHOOK_METRICS_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise _fail(f"invalid settings: {problems}") from exc


def _stack(state_dir: Path | None) -> LocalStack:
    settings = _settings()
    return LocalStack(
        state_dir or settings.state_dir,
        settings.db_port,
        log_max_bytes=settings.log_max_bytes,
        log_keep=settings.log_keep,
    )


def _say(message: str) -> None:
    console.print(f"[green]•[/green] {message}")


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=1)


@app.command()
def up(
    state_dir: StateDir = None,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Start in the background and return.")
    ] = False,
) -> None:
    """Start the local stack (PostgreSQL with the Supabase look-alike and migrations, background services)."""
    from meshhook_rt_metrics.localstack.users import ensure_demo_users

    stack = _stack(state_dir)
    try:
        stack.up(_say)
        demo_users = ensure_demo_users(stack.database_url)
    except (PostgresError, migrator.MigrationError, psycopg.Error) as exc:
        raise _fail(str(exc)) from exc
    _say(f"Dashboard: {stack.dashboard_url}")
    for user in demo_users:
        _say(f"sign in as {user.email} / {user.password} ({user.role} of project {user.project})")
    if not stack.dashboard_built:
        console.print(
            f"[yellow]warning:[/yellow] the dashboard is not built ({stack.dashboard_dir}): run 'make dashboard'"
            " (the page is served as soon as it exists)"
        )
    if detach:
        _say(
            f"stack is up; 'meshhook-metrics status --state-dir {stack.state_dir} -o env' prints its settings"
        )
        return
    _say("running in the foreground; Ctrl-C stops the stack (logs in " + str(stack.log_dir) + ")")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            _keep_running(stack)
    except KeyboardInterrupt:
        pass
    finally:
        stack.down(_say)


def _keep_running(stack: LocalStack, seen: dict[str, int] | None = None) -> None:
    """One round of the foreground watch: a service that died is restarted (by its supervisor, or here when
    the supervisor itself is gone), PostgreSQL is started again; nothing tears the stack down but Ctrl-C."""
    seen = _restarts_seen if seen is None else seen
    if not stack.postgres.running():
        _say("PostgreSQL stopped unexpectedly; starting it again")
        try:
            stack.postgres.start()
        except PostgresError as exc:
            console.print(f"[yellow]warning:[/yellow] {exc}")
    for service in stack.services():
        details = stack.service_details(service.name)
        if details["restarts"] > seen.get(service.name, 0):
            _say(f"{service.name} restarted ({details['restarts']}): {details['last_error']}")
        seen[service.name] = details["restarts"]
    for name in stack.start_services(lambda _: None):
        _say(f"{name} stopped unexpectedly; started it again (logs in {stack.log_dir})")
        seen[name] = 0


_restarts_seen: dict[str, int] = {}


@app.command()
def down(state_dir: StateDir = None) -> None:
    """Stop the local stack's services and PostgreSQL (data is kept)."""
    stack = _stack(state_dir)
    try:
        stack.down(_say)
    except PostgresError as exc:
        raise _fail(str(exc)) from exc


@app.command()
def status(
    state_dir: StateDir = None,
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help="pretty, env or json")
    ] = OutputFormat.pretty,
) -> None:
    """Show whether the stack runs and how to connect to it."""
    stack = _stack(state_dir)
    if not stack.postgres.initialised:
        raise _fail(f"no local stack in {stack.state_dir}: run 'meshhook-metrics up' first")
    env = stack.env()
    if output is OutputFormat.env:
        for key, value in env.items():
            typer.echo(f"{key}={value}")
        return
    state = stack.status()
    details = {service.name: stack.service_details(service.name) for service in stack.services()}
    plane = _data_plane(stack)
    if output is OutputFormat.json:
        typer.echo(
            json.dumps({"services": state, "supervision": details, "data_plane": plane, "env": env}, indent=2)
        )
        return
    for name, value in state.items():
        line = f"{name:>12}: {value}"
        if name in details:
            line += f", restarts {details[name]['restarts']}"
            if details[name]["last_error"]:
                line += f", last error at {details[name]['last_error_at']}: {details[name]['last_error']}"
        console.print(line, markup=False, highlight=False)
    for line in _data_plane_lines(plane):
        console.print(line, markup=False, highlight=False)
    for key, value in env.items():
        console.print(f"{key:>12}: {value}")


def _data_plane(stack: LocalStack) -> dict[str, Any]:
    """Whether the rollup pass and the totals' fold keep up (``metrics.rollup_status()``, as ``GET /healthz``
    reads it), or why that could not be read."""
    unknown: dict[str, Any] = {"rollups": "unknown", "totals": "unknown"}
    if not stack.postgres.running():
        return {**unknown, "detail": "PostgreSQL is not running"}
    try:
        with psycopg.connect(stack.database_url, autocommit=True, connect_timeout=5) as conn:
            return health.rollup_health(conn)
    except psycopg.Error as exc:
        return {**unknown, "detail": logs.redact(f"{type(exc).__name__}: {exc}".splitlines()[0])}


def _data_plane_lines(plane: dict[str, Any]) -> list[str]:
    rollups = plane["rollups"]
    if "rollup_pending_points" in plane:
        rollups += f" ({plane['rollup_pending_points']:,} points not merged yet)"
    detail = f" ({plane['detail']})" if "detail" in plane else ""
    return [f"{'rollups':>12}: {rollups}{detail}", f"{'totals':>12}: {plane['totals']}{detail}"]


@app.command()
def migrate(
    db_url: Annotated[
        str, typer.Option("--db-url", envvar="DATABASE_URL", help="Target database (migration owner).")
    ],
) -> None:
    """Apply pending migrations, recorded in the Supabase CLI's history table."""
    try:
        applied = migrator.migrate(db_url, progress=lambda m: _say(f"applying {m.path.name}"))
    except (migrator.MigrationError, psycopg.OperationalError) as exc:
        raise _fail(str(exc)) from exc
    _say(f"{len(applied)} migration(s) applied; database is up to date")


MAINTAIN_WAIT = 120.0
"""Seconds a one-shot ``maintain`` waits for a maintenance run already in progress."""


def _say_waiting(why: str) -> None:
    typer.echo(f"{why}: waiting for it to finish (up to {MAINTAIN_WAIT:.0f} s) ...", err=True)


@app.command()
def maintain(
    db_url: Annotated[
        str,
        typer.Option(
            "--db-url",
            envvar=["MESHHOOK_METRICS_DATABASE_URL", "DATABASE_URL"],
            help="Database to maintain (better in the environment: a command line is visible to ps).",
        ),
    ],
    loop: Annotated[
        bool, typer.Option("--loop", help="Keep running: publish sweeps and periodic maintenance.")
    ] = False,
) -> None:
    """Run maintenance (rollups, retention, partitions) once, or keep running where pg_cron cannot.

    Once: rollup passes until every point mergeable at the start is merged (after an outage of the pass this
    can take minutes: ~80,000 points a second on two cores), then maintenance."""
    logs.configure(logging.INFO)
    if loop:
        settings = _settings()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            maintenance.run_loop(db_url, settings.publish_every, settings.maintain_every, stop)
        return
    try:
        with psycopg.connect(db_url, autocommit=True) as conn:
            # the rollup pass first: minutes merged before their hours roll up
            sent = maintenance.publish_once(conn)
            report = maintenance.maintain_when_free(conn, MAINTAIN_WAIT, _say_waiting)
    except psycopg.Error as exc:
        raise _fail(str(exc)) from exc
    if "skipped" in report:
        raise _fail(f"{report['skipped']} for more than {MAINTAIN_WAIT:.0f} s; nothing done, try again")
    typer.echo(json.dumps({**report, "messages_published": sent}, indent=2, default=str))


@app.command()
def serve(
    state_dir: StateDir = None,
    db_url: Annotated[
        str | None, typer.Option("--db-url", help="Login DSN [env: MESHHOOK_METRICS_DATABASE_URL]")
    ] = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Listen address [env: MESHHOOK_METRICS_API_HOST]")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="Listen port [env: MESHHOOK_METRICS_API_PORT]")
    ] = None,
) -> None:
    """Run the HTTP service: /api/metrics, /metrics (Prometheus), /healthz, /openapi.json."""
    from meshhook_rt_metrics.api.server import serve as run_server
    from meshhook_rt_metrics.api.settings import ApiSettings

    overrides: dict[str, object] = {}
    if db_url:
        overrides["database_url"] = db_url
    if host:
        overrides["api_host"] = host
    if port is not None:
        overrides["api_port"] = port
    if state_dir is not None:
        overrides["state_dir"] = state_dir
    try:
        settings = ApiSettings(**overrides)  # type: ignore[arg-type]
        run_server(settings)
    except ValueError as exc:
        raise _fail(str(exc)) from exc


@app.command()
def demo(
    state_dir: StateDir = None,
    db_url: Annotated[
        str | None, typer.Option("--db-url", help="Database (default: the local stack's).")
    ] = None,
    seconds: Annotated[
        float | None, typer.Option("--seconds", help="Stop after this long (default: Ctrl-C).")
    ] = None,
) -> None:
    """Simulated MeshHook traffic through ingest, with a live view of the per-minute aggregates."""
    from meshhook_rt_metrics import demo as demo_module
    from meshhook_rt_metrics.localstack.demo_receiver import DEMO_SECRET

    stack = _stack(state_dir)
    url = db_url or stack.database_url
    _say(
        "a simulated MeshHook worker records through MetricsClient; Ctrl-C stops the demo (the stack keeps running)"
    )
    _say(
        f"every {demo_module.INCIDENT_EVERY // 60} minutes a minute of rejected webhooks fires the alert "
        f"'{demo_module.RULE_NAME}'; notifications: {stack.log_dir / 'receiver.log'}"
    )
    try:
        sent = demo_module.run(url, seconds, receiver=(stack.receiver_url, DEMO_SECRET))
    except KeyboardInterrupt:
        return
    except psycopg.Error as exc:
        raise _fail(str(exc)) from exc
    _say(f"demo simulated {sent} seconds of MeshHook traffic")


def _alert_settings(stack: LocalStack | None, db_url: str | None) -> AlertSettings:
    """The worker's settings: the environment's, the local stack's connection and keys, then ``--db-url``."""
    from meshhook_rt_metrics.alerting.settings import AlertSettings

    overrides: dict[str, object] = {}
    if stack is not None:
        env = stack.gateway_env()
        overrides |= {
            "database_url": stack.database_url,
            "supabase_url": env["SUPABASE_URL"],
            "service_key": env["SUPABASE_SERVICE_ROLE_KEY"],
            "jwt_secret": env["SUPABASE_JWT_SECRET"],
        }
    if db_url:
        overrides["database_url"] = db_url
    return AlertSettings(**overrides)  # type: ignore[arg-type]


@app.command("alert-worker")
def alert_worker(
    state_dir: StateDir = None,
    db_url: Annotated[
        str | None, typer.Option("--db-url", help="Login DSN [env: MESHHOOK_METRICS_ALERT_DATABASE_URL]")
    ] = None,
    local: Annotated[
        bool,
        typer.Option("--local", help="Use the local stack's database, gateway and keys (from --state-dir)."),
    ] = False,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
) -> None:
    """Evaluate alert rules and deliver notifications until stopped (SIGTERM hands the leases over)."""
    import asyncio

    from meshhook_rt_metrics.alerting.worker import AlertWorker

    logs.configure(log_level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # request lines carry receiver URLs
    try:
        settings = _alert_settings(_stack(state_dir) if local else None, db_url)
    except ValidationError as exc:
        raise _fail(f"invalid alert worker settings: {exc}") from exc

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await AlertWorker(settings).run(stop)

    asyncio.run(main())


@app.command("demo-receiver")
def demo_receiver(
    port: Annotated[int, typer.Option("--port", help="Listen port on 127.0.0.1.")] = 54340,
) -> None:
    """A local webhook receiver that checks signatures and prints the notifications it gets (demo)."""
    from meshhook_rt_metrics.localstack.demo_receiver import serve as serve_receiver

    with contextlib.suppress(KeyboardInterrupt):
        serve_receiver(port)


class MemberRole(StrEnum):
    viewer = "viewer"
    editor = "editor"
    admin = "admin"


@app.command()
def token(
    project_id: Annotated[uuid.UUID, typer.Option("--project-id", help="Project the user belongs to.")],
    user_id: Annotated[uuid.UUID, typer.Option("--user-id", help="The user (the token's 'sub').")],
    state_dir: StateDir = None,
    role: Annotated[
        MemberRole, typer.Option("--role", help="Membership role written by --grant.")
    ] = MemberRole.viewer,
    grant: Annotated[
        bool, typer.Option("--grant", help="Add or update the user's membership of the project.")
    ] = False,
    expires_in: Annotated[int, typer.Option("--expires-in", min=1, help="Token lifetime in seconds.")] = 3600,
    db_url: Annotated[
        str | None, typer.Option("--db-url", help="Database for --grant [default: the stack's].")
    ] = None,
) -> None:
    """Print a user access token signed with the stack's JWT secret (as Supabase Auth would issue it)."""
    from meshhook_rt_metrics.localstack.gateway.keys import keys_for_state_dir

    stack = _stack(state_dir)
    if grant:
        try:
            with psycopg.connect(db_url or stack.database_url) as conn, conn.transaction():
                conn.execute(
                    "insert into metrics.projects (id) values (%s) on conflict do nothing", (project_id,)
                )
                conn.execute(
                    "insert into metrics.project_members (project_id, user_id, role) values (%s, %s, %s)"
                    " on conflict (project_id, user_id) do update set role = excluded.role",
                    (project_id, user_id, role.value),
                )
        except (psycopg.Error, PostgresError) as exc:
            raise _fail(f"could not grant the membership: {exc}") from exc
    typer.echo(keys_for_state_dir(stack.state_dir).user_token(user_id, expires_in=expires_in))


user_app = typer.Typer(help="Local stack users who sign in with email and password (like Supabase Auth).")
app.add_typer(user_app, name="user")


@user_app.command("add")
def user_add(
    email: Annotated[str, typer.Option("--email", help="The user's email (sign-in name).")],
    password: Annotated[
        str,
        typer.Option(
            "--password",
            prompt=True,
            hide_input=True,
            help="At least 8 characters; an existing user's is replaced. Asked for when not given.",
        ),
    ],
    project: Annotated[uuid.UUID, typer.Option("--project", help="Project the user becomes a member of.")],
    role: Annotated[MemberRole, typer.Option("--role", help="Membership role.")] = MemberRole.viewer,
    state_dir: StateDir = None,
    db_url: Annotated[
        str | None, typer.Option("--db-url", help="Database (as postgres); default: the stack's.")
    ] = None,
) -> None:
    """Create or update a user of the local stack's sign-in and their membership of a project."""
    from meshhook_rt_metrics.localstack.gateway.auth_api import UserInputError
    from meshhook_rt_metrics.localstack.users import add_member

    stack = _stack(state_dir)
    try:
        with psycopg.connect(db_url or stack.database_url) as conn:
            user_id = add_member(conn, email, password, project, role.value)
    except UserInputError as exc:
        raise _fail(str(exc)) from exc
    except (psycopg.Error, PostgresError) as exc:
        raise _fail(f"could not add the user: {exc}") from exc
    _say(f"user {email.strip().lower()} ({user_id}) is {role.value} of project {project}")
    typer.echo(str(user_id))


@app.command()
def gateway(
    state_dir: StateDir = None,
    db_url: Annotated[
        str | None, typer.Option("--db-url", help="Database (as postgres) [default: the stack's].")
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Listen address.")] = "127.0.0.1",
    port: Annotated[
        int | None, typer.Option("--port", help="Listen port [default: the stack's, 54321].")
    ] = None,
    functions_dir: Annotated[Path, typer.Option("--functions-dir", help="Edge functions.")] = Path(
        "supabase/functions"
    ),
    deno: Annotated[
        str | None, typer.Option("--deno", envvar="MESHHOOK_METRICS_DENO", help="Deno binary.")
    ] = None,
    idle_timeout: Annotated[
        float, typer.Option("--idle-timeout", help="Close silent sockets after seconds.")
    ] = 60.0,
    replay_grace: Annotated[
        float,
        typer.Option(
            "--replay-grace", help="Seconds after start in which rejoining channels get missed messages."
        ),
    ] = 30.0,
    access_token_lifetime: Annotated[
        int,
        typer.Option(
            "--access-token-lifetime",
            min=1,
            envvar="MESHHOOK_METRICS_GATEWAY_ACCESS_TOKEN_LIFETIME",
            help="Seconds an access token from /auth/v1 (sign-in, refresh) is valid.",
        ),
    ] = 3600,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
) -> None:
    """Run the Supabase-compatible gateway (Data API RPC, Realtime, edge functions) in the foreground."""
    import asyncio

    from meshhook_rt_metrics.localstack.gateway.app import build_server
    from meshhook_rt_metrics.localstack.gateway.config import GatewayConfig
    from meshhook_rt_metrics.localstack.gateway.keys import keys_for_state_dir

    logs.configure(log_level)
    stack = _stack(state_dir)
    config = GatewayConfig(
        db_url=db_url or stack.database_url,
        keys=keys_for_state_dir(stack.state_dir),
        host=host,
        port=port or stack.gateway_port,
        # the Data API's login: from the environment (not argv, which ps shows), else the stack's
        authenticator_password=os.environ.get("MESHHOOK_METRICS_AUTHENTICATOR_PASSWORD")
        or stack.postgres.role_password("authenticator"),
        functions_dir=functions_dir.resolve(),
        deno=deno,
        deno_dir=stack.state_dir / "gateway" / "deno",
        idle_timeout=idle_timeout,
        replay_grace=replay_grace,
        access_token_lifetime=access_token_lifetime,
    )
    server = build_server(config, log_level.lower())
    logs.redact_handlers()  # uvicorn installed handlers of its own
    asyncio.run(server.serve())


if __name__ == "__main__":
    app()
