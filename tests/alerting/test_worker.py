"""The alert worker as users run it (``meshhook-metrics alert-worker``), against real processes and faults.

The database, the gateway (Realtime), the publish loop and a loopback webhook receiver are real. Exactly-once
effect is counted as distinct ``webhook-id``s per receiver: a retry after a crash carries the same id.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.alerting.processes import Process, Receiver, TcpProxy
from tests.localstack.conftest import GatewayProcess, start_gateway
from tests.support import TestDatabase, batch, counter, ingest

ERRORS = "meshhook_webhook_failures_total"
SECRET = "whsec_c2VjcmV0LW5ldmVyLWluLWxvZ3MtMDEyMzQ1Njc4OQ=="


@pytest.fixture(scope="module")
def gateway(db: TestDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    yield from start_gateway(db, tmp_path_factory.mktemp("gateway"))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    yield r
    r.stop()


@pytest.fixture
def conn(db: TestDatabase) -> Iterator[psycopg.Connection[object]]:
    with psycopg.connect(db.url, autocommit=True) as c:
        yield c


class World:
    """A project with one rule (sum of failures by route over 1m > 0) and receivers; workers started on demand."""

    def __init__(
        self, db: TestDatabase, conn: psycopg.Connection[object], tmp: Path, gateway: GatewayProcess
    ) -> None:
        self.db, self.conn, self.tmp, self.gateway = db, conn, tmp, gateway
        self.project = uuid.uuid4()
        self.workers: list[Process] = []
        conn.execute("insert into metrics.projects (id) values (%s)", (self.project,))
        row = conn.execute(
            "insert into metrics.alert_rules (project_id, name, metric, agg, group_by, window_length, op, threshold)"
            " values (%s, 'failures', %s, 'sum', '{route}', '1 minute', '>', 0) returning id",
            (self.project, ERRORS),
        ).fetchone()
        assert row is not None
        self.rule = row[0]

    def link(self, target: str, secret: str | None = None) -> None:
        row = self.conn.execute(
            "insert into metrics.alert_receivers (project_id, name, kind, target, secret)"
            " values (%s, %s, 'webhook', %s, %s) returning id",
            (self.project, f"hook-{uuid.uuid4().hex[:6]}", target, secret),
        ).fetchone()
        assert row is not None
        self.conn.execute(
            "insert into metrics.alert_rule_receivers values (%s, %s, %s)", (self.project, self.rule, row[0])
        )

    def worker(
        self, name: str, *, realtime: bool = True, sweep: float = 1.0, db_url: str | None = None
    ) -> Process:
        env = {
            "MESHHOOK_METRICS_ALERT_DATABASE_URL": db_url or self.db.url,
            "MESHHOOK_METRICS_ALERT_WORKER_ID": name,
            "MESHHOOK_METRICS_ALERT_SSRF_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
            "MESHHOOK_METRICS_ALERT_LEASE_TTL": "3",
            "MESHHOOK_METRICS_ALERT_LEASE_EVERY": "0.5",
            "MESHHOOK_METRICS_ALERT_SWEEP_EVERY": str(sweep),
            "MESHHOOK_METRICS_ALERT_DELIVERY_LOCK": "2",
            "MESHHOOK_METRICS_ALERT_DELIVER_EVERY": "0.2",
            "MESHHOOK_METRICS_ALERT_WATCHDOG_SECONDS": "4",
        }
        if realtime:
            env |= {
                "MESHHOOK_METRICS_ALERT_SUPABASE_URL": self.gateway.url,
                "MESHHOOK_METRICS_ALERT_SERVICE_KEY": self.gateway.service_key,
                "MESHHOOK_METRICS_ALERT_JWT_SECRET": self.gateway.keys.secret,
            }
        process = Process(["alert-worker", "--log-level", "info"], self.tmp / f"{name}.log", env).start()
        self.workers.append(process)
        return process

    def fail(self, route: str, value: float = 1) -> None:
        ingest(
            self.conn,
            batch(self.project, [counter(ERRORS, value, {"route": route})], batch_id=uuid.uuid4().hex),
        )

    def owner(self) -> str | None:
        row = self.conn.execute(
            "select owner from metrics.alert_leases where project_id = %s", (self.project,)
        ).fetchone()
        return str(row[0]) if row else None

    def stop(self) -> None:
        for process in self.workers:
            process.stop(signal.SIGKILL)
        # the project goes with everything of it (rules, alerts, messages, leases): the next test's workers
        # must find nothing of this one to evaluate or deliver
        self.conn.execute("delete from metrics.projects where id = %s", (self.project,))
        self.conn.execute(
            "update metrics.config set alert_retry_base = default, alert_max_attempts = default"
        )


@pytest.fixture
def world(
    db: TestDatabase, conn: psycopg.Connection[object], tmp_path: Path, gateway: GatewayProcess
) -> Iterator[World]:
    w = World(db, conn, tmp_path, gateway)
    yield w
    w.stop()


def test_a_live_message_wakes_the_evaluation_before_any_sweep(
    world: World, receiver: Receiver, db: TestDatabase, tmp_path: Path
) -> None:
    world.link(receiver.url("/live"))
    publisher = Process(["maintain", "--loop", "--db-url", db.url], tmp_path / "publish.log",
                        {"MESHHOOK_METRICS_PUBLISH_EVERY": "0.2"}).start()  # fmt: skip
    try:
        worker = world.worker("live", sweep=600)  # the sweep cannot be what fires it
        assert worker.wait_for_log("realtime: joined 1 project topic"), worker.log()[-2000:]
        world.fail("/api/hooks/[slug]")
        assert receiver.wait(lambda: len(receiver.keys("/live", "firing")) == 1, timeout=20), worker.log()[
            -3000:
        ]
    finally:
        publisher.stop()


def test_the_sweep_fires_when_live_messages_are_lost(world: World, receiver: Receiver) -> None:
    world.link(receiver.url("/sweep"))
    world.worker("sweeper", sweep=1.0)  # no publish loop runs: Realtime carries nothing
    world.fail("/a")
    assert receiver.wait(lambda: len(receiver.keys("/sweep", "firing")) == 1, timeout=20)


def test_a_worker_killed_mid_delivery_sends_the_same_notice_again_not_a_second_one(
    world: World, receiver: Receiver
) -> None:
    receiver.answer = lambda _path, attempt: (200, 30.0 if attempt == 1 else 0.0)  # the first attempt hangs
    world.link(receiver.url("/kill"))
    first = world.worker("first", realtime=False)
    world.fail("/a")
    assert receiver.wait(lambda: len(receiver.keys("/kill")) == 1)
    first.stop(signal.SIGKILL)
    world.worker("second", realtime=False)
    assert receiver.wait(lambda: len(receiver.keys("/kill")) == 2, timeout=30)
    keys = receiver.keys("/kill")
    assert keys[0] == keys[1] and keys[0]  # the same idempotency key: one notice
    assert receiver.wait(  # recorded a moment after the receiver answered
        lambda: (
            world.conn.execute(
                "select status, attempts from metrics.alert_messages where project_id = %s", (world.project,)
            ).fetchall()
            == [("sent", 2)]
        ),
        timeout=10,
    )


def test_the_other_worker_takes_over_a_killed_owner_without_a_lost_or_double_notice(
    world: World, receiver: Receiver
) -> None:
    world.link(receiver.url("/ha"))
    a = world.worker("a", realtime=False)
    assert a.wait_for_log("leases: 1 project")
    b = world.worker("b", realtime=False)
    world.fail("/a")
    assert receiver.wait(lambda: len(receiver.keys("/ha")) == 1)
    a.stop(signal.SIGKILL)
    assert receiver.wait(lambda: world.owner() == "b", timeout=15), b.log()[-2000:]
    world.fail("/b")
    assert receiver.wait(lambda: len(set(receiver.keys("/ha"))) == 2, timeout=20)
    receiver.wait(lambda: False, timeout=2)  # nothing more may come
    # one notice per transition; a notice that reached the receiver just before its sender was killed may
    # come again from the other worker, with the same key
    assert len(set(receiver.keys("/ha"))) == 2
    events = world.conn.execute(
        "select labels ->> 'route', state from metrics.alert_events where project_id = %s order by id",
        (world.project,),
    ).fetchall()
    assert events == [("/a", "firing"), ("/b", "firing")]


def test_a_gateway_restart_is_survived(world: World, receiver: Receiver, gateway: GatewayProcess) -> None:
    world.link(receiver.url("/restart"))
    worker = world.worker("rt", sweep=2.0)
    assert worker.wait_for_log("realtime: joined 1 project topic")
    world.fail("/a")
    assert receiver.wait(lambda: len(receiver.keys("/restart")) == 1)
    gateway.restart()
    assert worker.wait_for_log("rebuilding the connection", timeout=30), worker.log()[-3000:]
    world.fail("/b")
    assert receiver.wait(lambda: len(receiver.keys("/restart")) == 2, timeout=20)
    assert len(set(receiver.keys("/restart"))) == 2


def test_a_receiver_down_for_a_while_gets_each_notice_once_it_is_back(
    world: World, receiver: Receiver
) -> None:
    world.conn.execute("update metrics.config set alert_retry_base = '200 milliseconds'")
    receiver.answer = lambda _path, attempt: (503, 0.0) if attempt <= 3 else (200, 0.0)
    world.link(receiver.url("/down"))
    world.worker("retrier", realtime=False)
    world.fail("/a")
    assert receiver.wait(lambda: len(receiver.keys("/down")) == 4, timeout=30)
    assert len(set(receiver.keys("/down"))) == 1

    def delivery() -> tuple[str, int] | None:
        row = world.conn.execute(
            "select status, attempts from metrics.alert_messages where project_id = %s", (world.project,)
        ).fetchone()
        return (str(row[0]), int(row[1])) if row else None

    # the worker records the 200 after the receiver has answered it
    assert receiver.wait(lambda: delivery() == ("sent", 4), timeout=10), delivery()


def test_a_failing_receiver_neither_delays_nor_repeats_the_others(world: World, receiver: Receiver) -> None:
    world.conn.execute(
        "update metrics.config set alert_retry_base = '100 milliseconds', alert_max_attempts = 3"
    )
    receiver.answer = lambda path, _attempt: (500, 0.0) if path == "/bad" else (200, 0.0)
    world.link(receiver.url("/bad"))
    world.link(receiver.url("/good"))
    world.worker("mixed", realtime=False)
    world.fail("/a")
    assert receiver.wait(lambda: len(receiver.keys("/bad")) == 3, timeout=30)
    assert receiver.keys("/good", "firing") == receiver.keys("/good")
    assert len(receiver.keys("/good")) == 1
    assert receiver.wait(  # the third attempt is recorded a moment after the receiver answered it
        lambda: (
            world.conn.execute(
                "select count(*) from metrics.alert_messages where project_id = %s and status = 'dead'",
                (world.project,),
            ).fetchone()
            == (1,)
        ),
        timeout=10,
    )


def test_secrets_and_targets_never_reach_the_log(world: World, receiver: Receiver) -> None:
    world.conn.execute(
        "update metrics.config set alert_retry_base = '100 milliseconds', alert_max_attempts = 2"
    )
    receiver.answer = lambda _path, _attempt: (500, 0.0)
    token_path = "/hooks/T0SECRETPATH/abcdef"
    world.link(receiver.url(token_path), secret=SECRET)
    worker = world.worker("quiet", realtime=True, sweep=1.0)
    world.fail("/a")
    assert receiver.wait(lambda: len(receiver.keys(token_path)) == 2, timeout=30)
    assert receiver.requests[0].headers.get("webhook-signature", "").startswith("v1,")
    assert worker.wait_for_log(": dead (HTTP 500)")  # the log does say what happened
    worker.stop()
    text = worker.log()
    for secret in (SECRET, SECRET.removeprefix("whsec_"), "T0SECRETPATH", world.gateway.service_key,
                   world.gateway.keys.secret):  # fmt: skip
        assert secret not in text


def test_a_network_cut_to_the_database_loses_no_notice_and_sends_none_twice(
    world: World, receiver: Receiver
) -> None:
    url = psycopg.conninfo.conninfo_to_dict(world.db.url)
    proxy = TcpProxy(int(url["port"]))
    proxied = psycopg.conninfo.make_conninfo(world.db.url, host="127.0.0.1", port=proxy.port)
    first = True

    def answer(_path: str, _attempt: int) -> tuple[int, float]:
        nonlocal first
        if first:  # the receiver accepts the notice, but the worker's connection dies before it records that
            first = False
            proxy.cut()
        return 200, 0.0

    receiver.answer = answer
    world.link(receiver.url("/cut"))
    try:
        worker = world.worker("cut", realtime=False, db_url=proxied)
        assert worker.wait_for_log("leases: 1 project")
        world.fail("/a")  # acknowledged by the database directly, while the worker's link is about to go
        assert receiver.wait(lambda: len(receiver.keys("/cut")) == 1)
        receiver.wait(lambda: False, timeout=3)  # the database stays unreachable for a while
        assert "OperationalError" in worker.log()
        proxy.restore()
        assert receiver.wait(lambda: len(receiver.keys("/cut")) == 2, timeout=30), worker.log()[-3000:]
        keys = receiver.keys("/cut")
        assert keys[0] == keys[1]  # the same notice again (its lock lapsed): the receiver deduplicates by key
        assert receiver.wait(
            lambda: (
                world.conn.execute(
                    "select status from metrics.alert_messages where project_id = %s", (world.project,)
                ).fetchall()
                == [("sent",)]
            ),
            timeout=10,
        )
        world.fail("/b")  # and the worker goes on after the outage
        assert receiver.wait(lambda: len(set(receiver.keys("/cut"))) == 2, timeout=20)
    finally:
        proxy.close()


def test_a_socket_that_looks_alive_but_is_dead_is_rebuilt_by_the_watchdog(
    world: World, receiver: Receiver, gateway: GatewayProcess, db: TestDatabase, tmp_path: Path
) -> None:
    world.link(receiver.url("/frozen"))
    publisher = Process(["maintain", "--loop", "--db-url", db.url], tmp_path / "publish.log",
                        {"MESHHOOK_METRICS_PUBLISH_EVERY": "0.2"}).start()  # fmt: skip
    assert gateway.proc is not None
    try:
        worker = world.worker("frozen", sweep=600)  # only Realtime (and catch-ups) can wake it
        assert worker.wait_for_log("realtime: joined 1 project topic")
        os.kill(gateway.proc.pid, signal.SIGSTOP)  # the TCP connection stays open; nothing answers
        try:
            assert worker.wait_for_log("no echo for", timeout=20), worker.log()[-2000:]
        finally:
            os.kill(gateway.proc.pid, signal.SIGCONT)
        assert receiver.wait(
            lambda: "realtime: joined" in worker.log().split("no echo for", 1)[1], timeout=60
        )
        world.fail("/a")
        assert receiver.wait(lambda: len(receiver.keys("/frozen")) == 1, timeout=20), worker.log()[-3000:]
    finally:
        publisher.stop()


def test_a_project_that_gets_its_first_rule_is_picked_up_without_a_restart(
    world: World, receiver: Receiver, db: TestDatabase, conn: psycopg.Connection[object], tmp_path: Path,
    gateway: GatewayProcess,
) -> None:  # fmt: skip
    world.link(receiver.url("/first"))
    worker = world.worker("pickup", sweep=1.0)
    assert worker.wait_for_log("leases: 1 project")
    later = World(db, conn, tmp_path, gateway)  # a second project, its rule created while the worker runs
    try:
        later.link(receiver.url("/later"))
        assert worker.wait_for_log("leases: 2 project", timeout=15)
        later.fail("/a")
        assert receiver.wait(lambda: len(receiver.keys("/later")) == 1, timeout=20)
    finally:
        later.stop()
