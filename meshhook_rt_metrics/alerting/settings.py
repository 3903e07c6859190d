"""Settings of the alert worker, read from ``MESHHOOK_METRICS_ALERT_*`` environment variables."""

from __future__ import annotations

import os
import socket
import uuid

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from meshhook_rt_metrics.alerting.notify import SmtpSettings
from meshhook_rt_metrics.alerting.ssrf import SsrfPolicy


def default_worker_id() -> str:
    """Unique per process: a restarted worker is a new owner (its old leases expire or are released)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class AlertSettings(BaseSettings):
    """How the worker reaches the database and Realtime, how often it works, and where it may send.

    ``database_url`` logs in as a role that may ``SET ROLE service_role`` (``postgres`` on Supabase and locally).
    """

    # by name too: the CLI passes database_url=..., which the aliases alone would not take
    model_config = SettingsConfigDict(
        env_prefix="MESHHOOK_METRICS_ALERT_", extra="ignore", validate_by_name=True, validate_by_alias=True
    )

    database_url: str = Field(
        default="postgresql://postgres:postgres@127.0.0.1:54322/postgres",
        validation_alias=AliasChoices("MESHHOOK_METRICS_ALERT_DATABASE_URL", "MESHHOOK_METRICS_DATABASE_URL"),
    )
    supabase_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MESHHOOK_METRICS_ALERT_SUPABASE_URL", "SUPABASE_URL"),
        description="Realtime's base URL (the project's); none: the sweep alone evaluates.",
    )
    service_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("MESHHOOK_METRICS_ALERT_SERVICE_KEY", "SUPABASE_SERVICE_ROLE_KEY"),
        description="Service role key: the apikey of the Realtime connection.",
    )
    jwt_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("MESHHOOK_METRICS_ALERT_JWT_SECRET", "SUPABASE_JWT_SECRET"),
        description="With it, short-lived service tokens are minted and refreshed before they expire.",
    )
    worker_id: str = Field(default_factory=default_worker_id, min_length=1, max_length=200)
    lease_ttl: float = Field(default=10.0, ge=1, le=600, description="Seconds a lease lasts unless renewed.")
    lease_every: float = Field(default=3.0, gt=0, le=300, description="Seconds between lease renewals.")
    sweep_every: float = Field(default=5.0, gt=0, le=600, description="Seconds between full evaluations.")
    deliver_every: float = Field(default=0.5, gt=0, le=60, description="Seconds between outbox polls.")
    delivery_batch: int = Field(default=20, ge=1, le=1000)
    delivery_timeout: float = Field(
        default=10.0, gt=0, le=120, description="Seconds a whole attempt may take (connect, send, answer)."
    )
    delivery_lock: float = Field(
        default=60.0,
        ge=1,
        le=3600,
        description="Seconds a claimed message waits for its worker before a retry.",
    )
    watchdog_seconds: float = Field(
        default=20.0, ge=2, le=600, description="No echo of the probe within this long: rebuild the socket."
    )
    ssrf_guard: bool = Field(
        default=True, description="Refuse internal addresses (never turn off in production)."
    )
    ssrf_allowed_networks: list[str] = Field(
        default_factory=list, description='Networks the guard lets through, e.g. ["127.0.0.0/8"] (JSON list).'
    )
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_starttls: bool = True
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "meshhook-rt-metrics <alerts@localhost>"

    def ssrf_policy(self) -> SsrfPolicy:
        return SsrfPolicy.from_settings(self.ssrf_allowed_networks, enabled=self.ssrf_guard)

    def smtp(self) -> SmtpSettings | None:
        if not self.smtp_host:
            return None
        password = self.smtp_password.get_secret_value() if self.smtp_password else None
        return SmtpSettings(
            host=self.smtp_host,
            port=self.smtp_port,
            starttls=self.smtp_starttls,
            username=self.smtp_username,
            password=password,
            from_address=self.smtp_from,
        )
