"""The alert worker: leases, evaluation (woken by live messages, and a sweep), delivery, the live socket.

Four loops on one event loop, each with its own database connection, each surviving a database or network
outage on its own (it logs, waits and reconnects). State lives in PostgreSQL only: a restarted worker claims
leases again and continues from the instance rows; an evaluation after an outage reads the rollups as they
are now (it does not guess what happened meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from uuid import UUID

import httpx
import psycopg

from meshhook_rt_metrics.alerting import delivery, evaluation, lease
from meshhook_rt_metrics.alerting.database import Conn, connect
from meshhook_rt_metrics.alerting.notify import Notifier, build_notifiers
from meshhook_rt_metrics.alerting.settings import AlertSettings
from meshhook_rt_metrics.alerting.ssrf import guarded_client
from meshhook_rt_metrics.alerting.subscription import LiveTopics
from meshhook_rt_metrics.alerting.tokens import ServiceTokens

log = logging.getLogger(__name__)
RETRY_SECONDS = 2.0
PRUNE_EVERY = 3600.0  # seconds between prunes of old alert history (any worker may run it)


@dataclass
class Wake:
    """Why a project is queued for evaluation: all its rules, or those of the metrics live messages named."""

    every_rule: bool = False
    metrics: set[str] = field(default_factory=set)


class AlertWorker:
    def __init__(
        self,
        settings: AlertSettings,
        *,
        notifiers: dict[str, Notifier] | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self.id = settings.worker_id
        self.leases: lease.Leases = {}
        self._notifiers = notifiers if notifiers is not None else build_notifiers(settings.smtp())
        self._http = http
        self._queued: dict[UUID, Wake] = {}
        self._evaluate_now = asyncio.Event()
        self._deliver_now = asyncio.Event()
        self._leases_changed = asyncio.Event()
        self._live: LiveTopics | None = None

    # -- wake-ups ------------------------------------------------------------------------------------
    def wake(self, project: UUID) -> None:
        """Queue an evaluation of every rule of a project (a sweep, a new lease, a catch-up)."""
        if project in self.leases:
            self._queued.setdefault(project, Wake()).every_rule = True
            self._evaluate_now.set()

    def wake_all(self) -> None:
        for project in self.leases:
            self.wake(project)

    def _on_rollup(self, project: UUID, metrics: list[str]) -> None:
        """A live message: evaluate the rules of the metrics it names (their values are read from SQL)."""
        if project in self.leases and metrics:
            self._queued.setdefault(project, Wake()).metrics.update(metrics)
            self._evaluate_now.set()

    # -- loops -------------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then hand the leases over and close everything."""
        policy = self.settings.ssrf_policy()
        http = self._http or guarded_client(policy, timeout=self.settings.delivery_timeout)
        loops: dict[str, Callable[[asyncio.Event], Awaitable[None]]] = {
            "leases": self._lease_loop,
            "evaluation": self._evaluation_loop,
            "delivery": lambda s: self._delivery_loop(s, http),
            "housekeeping": self._housekeeping_loop,
        }
        if self.settings.supabase_url:
            loops["realtime"] = self._live_loop
        log.info("alert worker %s started (%d loops)", self.id, len(loops))
        tasks = [asyncio.create_task(_forever(name, loop, stop)) for name, loop in loops.items()]
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._shutdown(http)

    async def _shutdown(self, http: httpx.AsyncClient) -> None:
        if self._live is not None:
            await self._live.close()
        if self._http is None:
            await http.aclose()
        with contextlib.suppress(psycopg.Error, OSError):
            conn = await connect(self.settings.database_url, "release")
            async with conn:
                released = await lease.release(conn, self.id)
            log.info("alert worker %s stopped; %d lease(s) handed over", self.id, released)

    async def _lease_loop(self, stop: asyncio.Event) -> None:
        """Only the database: Realtime (re)joins happen in the realtime loop, so a dead gateway never lets a
        lease expire."""
        conn = await connect(self.settings.database_url, "leases")
        async with conn:
            while not stop.is_set():
                leases = await lease.claim(conn, self.id, self.settings.lease_ttl)
                gained = set(leases) - set(self.leases)
                lost = set(self.leases) - set(leases)
                self.leases = leases
                for project in lost:
                    self._queued.pop(project, None)
                if gained or lost:
                    log.info("leases: %d project(s) (+%d -%d)", len(leases), len(gained), len(lost))
                    self._leases_changed.set()
                for project in gained:
                    self.wake(project)  # catch up from SQL: what happened while nobody evaluated it
                await _sleep(stop, self.settings.lease_every)

    async def _evaluation_loop(self, stop: asyncio.Event) -> None:
        conn = await connect(self.settings.database_url, "evaluation")
        async with conn:
            self.wake_all()
            next_sweep = time.monotonic() + self.settings.sweep_every
            while not stop.is_set():
                # live wake-ups come between sweeps; they never push the next sweep back
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._evaluate_now.wait(), timeout=max(0.0, next_sweep - time.monotonic())
                    )
                if time.monotonic() >= next_sweep:
                    self.wake_all()  # the sweep: Realtime may have lost messages, and quiet rules move on too
                    next_sweep = time.monotonic() + self.settings.sweep_every
                self._evaluate_now.clear()
                queued, self._queued = self._queued, {}
                for project, wake in queued.items():
                    await self._evaluate_one(conn, project, wake)

    async def _evaluate_one(self, conn: Conn, project: UUID, wake: Wake) -> None:
        """One project; its failure (other than a lost connection) is logged and does not stop the others."""
        try:
            await self._evaluate(conn, project, wake)
        except psycopg.OperationalError:
            raise  # the connection is gone: the loop reconnects and every project is swept again
        except Exception as exc:
            log.warning("project %s: evaluation failed: %s: %s", project, type(exc).__name__, exc)

    async def _evaluate(self, conn: Conn, project: UUID, wake: Wake) -> None:
        epoch = self.leases.get(project)
        if epoch is None:
            return
        rule_ids = None
        if not wake.every_rule:
            rule_ids = await evaluation.rules_of_metrics(conn, project, sorted(wake.metrics))
            if not rule_ids:
                return  # the message named no metric a rule reads
        try:
            report = await evaluation.evaluate(conn, project, self.id, epoch, rule_ids)
        except evaluation.LeaseLostError:
            log.warning("lease of project %s lost; another worker evaluates it", project)
            self.leases.pop(project, None)
            return
        if report.capped:
            log.warning("project %s: %d alert group(s) past the instance cap", project, report.capped)
        for transition in report.transitions:
            log.info(
                "alert %s %s -> %s (%s)",
                transition.get("rule"),
                transition.get("previous"),
                transition.get("state"),
                transition.get("fingerprint"),
            )
        if any(t.get("notified") for t in report.transitions):
            self._deliver_now.set()

    async def _delivery_loop(self, stop: asyncio.Event, http: httpx.AsyncClient) -> None:
        conn = await connect(self.settings.database_url, "delivery")
        pacer = delivery.Pacer()
        async with conn:
            while not stop.is_set():
                sent = await delivery.deliver_due(
                    conn,
                    self.id,
                    self._notifiers,
                    http,
                    pacer,
                    self.settings.delivery_batch,
                    self.settings.delivery_lock,
                    self.settings.delivery_timeout,
                )
                if sent:
                    continue  # more may be due
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._deliver_now.wait(), timeout=self.settings.deliver_every)
                self._deliver_now.clear()

    async def _housekeeping_loop(self, stop: asyncio.Event) -> None:
        """Pruning old history on a connection of its own: however slow it is, delivery goes on."""
        conn = await connect(self.settings.database_url, "housekeeping")
        async with conn:
            while not stop.is_set():
                try:
                    log.info("pruned alert history: %s", await delivery.prune(conn))
                except psycopg.OperationalError:
                    raise
                except psycopg.Error as exc:
                    log.warning("pruning alert history failed: %s", exc)
                await _sleep(stop, PRUNE_EVERY)

    async def _live_loop(self, stop: asyncio.Event) -> None:
        assert self.settings.supabase_url is not None
        key = self.settings.service_key.get_secret_value() if self.settings.service_key else None
        secret = self.settings.jwt_secret.get_secret_value() if self.settings.jwt_secret else None
        if self._live is None:
            self._live = LiveTopics(
                self.settings.supabase_url,
                ServiceTokens(key, secret),
                self.id,
                self._on_rollup,
                self.wake_all,
                self.settings.watchdog_seconds,
            )
        try:
            await self._live.sync(self.leases)
            self.wake_all()  # every (re)subscribe starts with a catch-up from SQL
            tick = max(1.0, self.settings.watchdog_seconds / 4)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._leases_changed.wait(), timeout=tick)
                if self._leases_changed.is_set():
                    self._leases_changed.clear()
                    await self._live.sync(self.leases)
                await self._live.check()
        except BaseException:
            await self._live.close()
            raise


async def _forever(name: str, loop: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event) -> None:
    """Run a loop; after a failure (database down, network cut) log it, wait and start it again."""
    while not stop.is_set():
        try:
            await loop(stop)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s loop: %s: %s; retrying in %.0f s", name, type(exc).__name__, exc, RETRY_SECONDS)
            await _sleep(stop, RETRY_SECONDS)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
