"""Client settings: constructor keywords win, then ``MESHHOOK_METRICS_*`` environment variables."""

from __future__ import annotations

import os
import re
import socket
import sys
import tempfile
from pathlib import Path
from typing import Literal, Self
from uuid import UUID

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from meshhook_rt_metrics.client.labels import MAX_LABEL_VALUE, check_label_names

IDENTITY_LABELS = frozenset({"service", "instance", "host"})
"""Label names the client sets itself on process (``service``, ``instance``) and host (``host``) metrics."""
MAX_CONSTANT_LABELS = 8
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _default_spool_dir() -> Path:
    """Private per-user state: ``$XDG_STATE_HOME/meshhook-metrics/spool``, else
    ``~/.local/state/meshhook-metrics/spool``; without a home directory ``$TMPDIR/meshhook-metrics-<uid>/spool``
    (still checked like any spool directory: refused if another user created it)."""
    state = os.environ.get("XDG_STATE_HOME", "")
    if os.path.isabs(state):  # the XDG spec: a relative value is invalid and ignored
        base = Path(state)
    else:
        try:
            home = Path.home()
        except (RuntimeError, KeyError):
            home = Path()
        if not home.is_absolute() or home == Path("/"):
            return Path(tempfile.gettempdir()) / f"meshhook-metrics-{os.geteuid()}" / "spool"
        base = home / ".local" / "state"
    return base / "meshhook-metrics" / "spool"


def check_label_value(what: str, value: object, limit: int = MAX_LABEL_VALUE) -> str:
    """A configured label value: a non-empty string of at most ``limit`` characters, no control
    characters, no surrounding whitespace, not starting with ``__`` (reserved, e.g. ``__overflow__``).

    Measured label values are truncated silently; configured ones are refused with a clear error instead,
    since a truncated identity could merge two workers into one series.
    """
    if not isinstance(value, str):
        raise ValueError(f"{what}: label value must be a string, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{what}: label value must not be empty")
    if value != value.strip():
        raise ValueError(f"{what}: label value {value!r} has leading or trailing whitespace")
    if _CONTROL.search(value):
        raise ValueError(f"{what}: label value {value!r} contains control characters")
    if value.startswith("__"):
        raise ValueError(f"{what}: label value {value!r} must not start with '__' (reserved)")
    if len(value) > limit:
        raise ValueError(
            f"{what}: label value is {len(value)} characters, at most {limit} allowed "
            "(max_label_value_length)"
        )
    return value


def default_service_name() -> str:
    """The program name: ``sys.argv[0]`` without directory and extension (``python -m pkg``: ``pkg``);
    ``python`` when there is none (interactive, ``-c``) or it is not a valid label value."""
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0 in ("", "-", "-c", "-m"):
        return "python"
    path = Path(argv0)
    name = path.parent.name if path.stem == "__main__" else path.stem
    name = _CONTROL.sub("", name).strip()[:100]
    if not name or name.startswith("__"):
        return "python"
    return name


def default_host_name() -> str:
    """``socket.gethostname()`` (``unknown`` if empty), cut to 100 characters."""
    name = _CONTROL.sub("", socket.gethostname()).strip()[:100]
    return name if name and not name.startswith("__") else "unknown"


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
    spool_dir: Path = Field(
        default_factory=_default_spool_dir, description="Root directory of the spool (private, per user)."
    )
    spool_max_bytes: int = Field(default=64 * 1024 * 1024, ge=4096, description="Spool size cap in bytes.")
    backoff_initial: float = Field(default=0.5, gt=0, le=60, description="First retry delay after a failure.")
    backoff_max: float = Field(default=30.0, gt=0, le=3600, description="Longest retry delay.")
    send_timeout: float = Field(default=5.0, gt=0, le=120, description="Connect/statement/HTTP timeout.")
    shipper: Literal["thread", "process"] = Field(
        default="thread",
        description=(
            "Where batches are sent from: the flush thread (thread), or a shipper process the flush hands "
            "each batch to, so the service never imports the database driver (process)."
        ),
    )
    close_timeout: float = Field(
        default=5.0, ge=0, le=120, description="Deadline of the final flush on close."
    )
    system_metrics: bool = Field(default=True, description="psutil process/host, GC and event-loop metrics.")
    host_metrics: bool = Field(default=True, description="Host-wide CPU, memory, disk and network metrics.")
    host_metrics_interval: float = Field(
        default=10.0,
        ge=0.0,
        le=3600.0,
        description=(
            "Seconds between host metric readings (taken at the first flush after each interval; "
            "0: every flush). Host counters still ship every increase, only later."
        ),
    )
    service_name: str | None = Field(
        default=None,
        description="`service` label of process metrics (OTel service.name); default: the program name.",
    )
    service_instance: str | None = Field(
        default=None,
        description=(
            "`instance` label of process metrics (OTel service.instance.id); default host:pid. Set it "
            "to a stable name (e.g. web-1) to continue the same series across restarts."
        ),
    )
    host_name: str | None = Field(
        default=None, description="`host` label of host metrics (OTel host.name); default: the hostname."
    )
    constant_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Opt-in labels added to every metric, application metrics included (default: none).",
    )

    @field_validator("service_name", "service_instance", "host_name")
    @classmethod
    def _identity_value(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        return check_label_value(info.field_name or "label", value)

    @model_validator(mode="after")
    def _labels_fit(self) -> Self:
        limit = min(self.max_label_value_length, MAX_LABEL_VALUE)
        for field in ("service_name", "service_instance", "host_name"):
            value = getattr(self, field)
            if value is not None:
                check_label_value(field, value, limit)
        if len(self.constant_labels) > MAX_CONSTANT_LABELS:
            raise ValueError(
                f"constant_labels: at most {MAX_CONSTANT_LABELS} labels, got {len(self.constant_labels)}"
            )
        names = tuple(self.constant_labels)
        check_label_names("constant_labels", names)
        reserved = sorted(IDENTITY_LABELS.intersection(names))
        if reserved:
            raise ValueError(
                f"constant_labels: {reserved!r} reserved (set by the client on process/host metrics; "
                "use service_name, service_instance or host_name)"
            )
        for name, value in self.constant_labels.items():
            check_label_value(f"constant_labels[{name!r}]", value, limit)
        return self

    def resolved_service_name(self) -> str:
        return self.service_name if self.service_name is not None else default_service_name()

    def resolved_host_name(self) -> str:
        return self.host_name if self.host_name is not None else default_host_name()
