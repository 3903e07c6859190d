"""Client settings: constructor keywords win, then ``MESHHOOK_METRICS_*`` environment variables."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal
from uuid import UUID

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_spool_dir() -> Path:
    return Path(tempfile.gettempdir()) / "meshhook-metrics-spool"


class ClientSettings(BaseSettings):
    """Every knob of :class:`MetricsClient`; the env var is ``MESHHOOK_METRICS_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="MESHHOOK_METRICS_", extra="ignore")

    project_id: UUID | None = Field(
        default=None, description="Tenant (MeshHook project) the points belong to."
    )
    database_url: SecretStr | None = Field(
        default=None, description="Trusted direct PostgreSQL connection (PostgresSink, fastest)."
    )
    supabase_url: str | None = Field(default=None, description="Supabase project URL (SupabaseSink).")
    supabase_key: SecretStr | None = Field(
        default=None, description="Key or user JWT for the Data API (SupabaseSink)."
    )
    source: str | None = Field(
        default=None, min_length=1, max_length=200, description="Batch source; default host:pid:random6."
    )
    mode: Literal["production", "development"] = Field(
        default="production",
        description="development: invalid values raise ValueError; production: counted and dropped.",
    )
    flush_interval: float = Field(default=1.0, ge=0.05, le=60.0, description="Seconds between flushes.")
    background: bool = Field(default=True, description="Run the flush thread (off: only explicit flush()).")
    max_label_sets: int = Field(default=1000, ge=1, le=100_000, description="Cardinality cap per metric.")
    max_label_value_length: int = Field(
        default=128, ge=8, le=1024, description="Longer values are truncated."
    )
    max_points_per_batch: int = Field(
        default=50_000, ge=1, le=50_000, description="Larger flushes are split."
    )
    spool_enabled: bool = Field(
        default=True, description="Spool failed batches on disk (else bounded memory)."
    )
    spool_dir: Path = Field(default_factory=_default_spool_dir, description="Root directory of the spool.")
    spool_max_bytes: int = Field(default=64 * 1024 * 1024, ge=4096, description="Spool size cap in bytes.")
    backoff_initial: float = Field(default=0.5, gt=0, le=60, description="First retry delay after a failure.")
    backoff_max: float = Field(default=30.0, gt=0, le=3600, description="Longest retry delay.")
    send_timeout: float = Field(default=5.0, gt=0, le=120, description="Connect/statement/HTTP timeout.")
    close_timeout: float = Field(
        default=5.0, ge=0, le=120, description="Deadline of the final flush on close."
    )
    system_metrics: bool = Field(default=True, description="psutil process/host, GC and event-loop metrics.")
    host_metrics: bool = Field(default=True, description="Host-wide CPU, memory, disk and network metrics.")
