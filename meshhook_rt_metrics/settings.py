"""Service-side settings (CLI, local stack, maintenance), read from ``MESHHOOK_METRICS_*`` env vars."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StackSettings(BaseSettings):
    """Where the local stack keeps its state and how often background work runs."""

    model_config = SettingsConfigDict(env_prefix="MESHHOOK_METRICS_", extra="ignore")

    state_dir: Path = Field(
        default=Path(".meshhook"), description="Directory holding the local stack's state."
    )
    db_port: int = Field(
        default=54322,
        ge=0,
        le=65535,
        description="Preferred port of the embedded PostgreSQL (0: any free port).",
    )
    publish_every: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Seconds between rollup passes (merge committed points, publish live updates).",
    )
    maintain_every: float = Field(
        default=60.0, gt=0, le=3600, description="Seconds between maintenance runs (rollups, retention)."
    )
    log_max_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1024,
        description="Size at which a local stack service's log is rotated.",
    )
    log_keep: int = Field(
        default=5, ge=1, le=100, description="Rotated logs kept per local stack service (<name>.log.1 ...)."
    )
