"""``meshhook-metrics``: run the local stack, apply migrations, run maintenance."""

from __future__ import annotations

import json
import logging
import signal
import threading
from enum import Enum
from pathlib import Path
from typing import Annotated

import psycopg
import typer
from rich.console import Console

from meshhook_rt_metrics.db import maintenance, migrator
from meshhook_rt_metrics.localstack.postgres import PostgresError
from meshhook_rt_metrics.localstack.stack import LocalStack
from meshhook_rt_metrics.settings import StackSettings

app = typer.Typer(help="MeshHook real-time metrics: local stack, migrations, maintenance.", no_args_is_help=True)
console = Console(stderr=True)

StateDir = Annotated[
    Path | None,
    typer.Option("--state-dir", help="Local stack state directory [env: MESHHOOK_METRICS_STATE_DIR; default .meshhook]"),
]


class OutputFormat(str, Enum):
    pretty = "pretty"
    env = "env"
    json = "json"


def _stack(state_dir: Path | None) -> LocalStack:
    settings = StackSettings()
    return LocalStack(state_dir or settings.state_dir, settings.db_port)


def _say(message: str) -> None:
    console.print(f"[green]•[/green] {message}")


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=1)


@app.command()
def up(
    state_dir: StateDir = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Start in the background and return.")] = False,
) -> None:
    """Start the local stack (PostgreSQL with the Supabase look-alike and migrations, background services)."""
    stack = _stack(state_dir)
    try:
        if detach:
            stack.up(_say)
            _say(f"stack is up; 'meshhook-metrics status --state-dir {stack.state_dir} -o env' prints its settings")
            return
        stack.up(_say, services=False)
    except (PostgresError, migrator.MigrationError) as exc:
        raise _fail(str(exc)) from exc
    _say("running in the foreground; Ctrl-C stops the stack")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    settings = StackSettings()
    try:
        maintenance.run_loop(stack.database_url, settings.publish_every, settings.maintain_every, stop)
    except KeyboardInterrupt:
        pass
    finally:
        stack.down(_say)


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
    output: Annotated[OutputFormat, typer.Option("--output", "-o", help="pretty, env or json")] = OutputFormat.pretty,
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
    if output is OutputFormat.json:
        typer.echo(json.dumps({"services": state, "env": env}, indent=2))
        return
    for name, value in state.items():
        console.print(f"{name:>12}: {value}")
    for key, value in env.items():
        console.print(f"{key:>12}: {value}")


@app.command()
def migrate(
    db_url: Annotated[str, typer.Option("--db-url", envvar="DATABASE_URL", help="Target database (migration owner).")],
) -> None:
    """Apply pending migrations, recorded in the Supabase CLI's history table."""
    try:
        applied = migrator.migrate(db_url, progress=lambda m: _say(f"applying {m.path.name}"))
    except (migrator.MigrationError, psycopg.OperationalError) as exc:
        raise _fail(str(exc)) from exc
    _say(f"{len(applied)} migration(s) applied; database is up to date")


@app.command()
def maintain(
    db_url: Annotated[str, typer.Option("--db-url", envvar="DATABASE_URL", help="Database to maintain.")],
    loop: Annotated[bool, typer.Option("--loop", help="Keep running: publish sweeps and periodic maintenance.")] = False,
) -> None:
    """Run maintenance (rollups, retention, partitions) once, or keep running where pg_cron cannot."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if loop:
        settings = StackSettings()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            maintenance.run_loop(db_url, settings.publish_every, settings.maintain_every, stop)
        except KeyboardInterrupt:
            pass
        return
    try:
        with psycopg.connect(db_url, autocommit=True) as conn:
            report = maintenance.maintain_once(conn)
            sent = maintenance.publish_once(conn)
    except psycopg.Error as exc:
        raise _fail(str(exc)) from exc
    typer.echo(json.dumps({**report, "messages_published": sent}, indent=2, default=str))


@app.command()
def demo(
    state_dir: StateDir = None,
    db_url: Annotated[str | None, typer.Option("--db-url", help="Database (default: the local stack's).")] = None,
    seconds: Annotated[float | None, typer.Option("--seconds", help="Stop after this long (default: Ctrl-C).")] = None,
) -> None:
    """Simulated MeshHook traffic through ingest, with a live view of the per-minute aggregates."""
    from meshhook_rt_metrics import demo as demo_module

    url = db_url or _stack(state_dir).database_url
    _say("sending a batch a second for the demo project; Ctrl-C stops the demo (the stack keeps running)")
    try:
        sent = demo_module.run(url, seconds)
    except KeyboardInterrupt:
        return
    except psycopg.Error as exc:
        raise _fail(str(exc)) from exc
    _say(f"demo sent {sent} batches")


if __name__ == "__main__":
    app()
