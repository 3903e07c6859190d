"""Request and response models of the alert configuration endpoints (/api/metrics/alerts...).

Shapes and bounds are checked here (422 with field paths); the rules that also bind other writers
(matchers that compile, aggregations metrics.query accepts, receiver targets per kind) are the SQL
functions of migration ``20261127000500_metrics_alerting.sql``, asked before writing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)
from pydantic.config import JsonDict

from meshhook_rt_metrics.alerting.notify.pagerduty import EVENTS_URL as PAGERDUTY_EVENTS_URL
from meshhook_rt_metrics.api.models import AGGREGATION, LABEL_NAME, METRIC_NAME, Timestamp

DURATION = r"^[0-9]{1,9}[smhd]?$"
_DURATION = re.compile(DURATION)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DAY = 86400


def duration_seconds(text: str) -> int:
    """``90s``, ``5m``, ``1h``, ``1d`` or a bare number of seconds."""
    found = _DURATION.match(text)
    if not found:
        raise ValueError("expected a duration such as 30s, 5m, 1h or 1d")
    return int(text.rstrip("smhd")) * _UNITS.get(text[-1], 1)


def format_duration(value: timedelta) -> str:
    """The shortest exact form: 300 s -> ``5m``, 90 s -> ``90s``, 0 -> ``0s``."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def between(low: str, high: str) -> AfterValidator:
    """A duration from ``low`` to ``high`` inclusive (the bounds of the column's check constraint)."""
    lowest, highest = duration_seconds(low), duration_seconds(high)

    def check(text: str) -> str:
        if not lowest <= duration_seconds(text) <= highest:
            raise ValueError(f"must be between {low} and {high}")
        return text

    return AfterValidator(check)


def _metric(name: str) -> str:
    if name.startswith("__"):
        raise ValueError('metric names starting with "__" are reserved')
    return name


def _no_nul(text: str) -> str:
    # PostgreSQL text cannot hold NUL: refused here with the field's path, not by the driver
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    return text


# C0 and C1 controls and the Unicode line/paragraph separators: a name ends up in e-mail subjects and
# chat messages, where a line break would forge headers or lines (mirrored by the name check constraints)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _no_control(text: str) -> str:
    if _CONTROL.search(text):
        raise ValueError("must not contain control characters or line breaks")
    return text


NoNul = AfterValidator(_no_nul)
NoControl = AfterValidator(_no_control)


def _unique(values: list[Any]) -> list[Any]:
    if len(set(values)) != len(values):
        raise ValueError("must not repeat")
    return values


# durations: the pattern has no sign and no fraction (a negative duration is a 422 at its field); the bounds
# are those of the columns' check constraints
Window = Annotated[str, Field(pattern=DURATION, description="1m to 1d, e.g. 5m"), between("1m", "1d")]
ForDuration = Annotated[str, Field(pattern=DURATION, description="0s to 1d, e.g. 2m"), between("0s", "1d")]
KeepFiringFor = Annotated[str, Field(pattern=DURATION, description="0s to 1d"), between("0s", "1d")]
NoDataAfter = Annotated[str, Field(pattern=DURATION, description="1m to 7d"), between("1m", "7d")]
GroupWait = Annotated[str, Field(pattern=DURATION, description="0s to 1h"), between("0s", "1h")]
GroupInterval = Annotated[str, Field(pattern=DURATION, description="1s to 1d"), between("1s", "1d")]
RepeatInterval = Annotated[str, Field(pattern=DURATION, description="1m to 7d"), between("1m", "7d")]
RuleMetric = Annotated[str, Field(min_length=1, max_length=200, pattern=METRIC_NAME), AfterValidator(_metric)]
LabelName = Annotated[str, Field(min_length=1, max_length=100, pattern=LABEL_NAME)]
GroupBy = Annotated[
    list[LabelName],
    Field(max_length=20, description="Group by these labels; [] merges all series; null: each series."),
    AfterValidator(_unique),
]
ReceiverIds = Annotated[
    list[UUID],
    Field(max_length=20, description="Receivers (of the same project) to notify."),
    AfterValidator(_unique),
]
Threshold = Annotated[StrictFloat, Field(allow_inf_nan=False)]
ResolveThreshold = Annotated[
    StrictFloat,
    Field(
        allow_inf_nan=False,
        description="Hysteresis: resolve only once the value is past this (> >=: at most the threshold; "
        "< <=: at least it; not with == !=). Null: the threshold.",
    ),
]
Name = Annotated[
    StrictStr,
    Field(min_length=1, max_length=200, description="1 to 200 characters, no control characters."),
    NoControl,
]
Description = Annotated[StrictStr, Field(max_length=2000), NoNul]
AnnotationKey = Annotated[str, Field(min_length=1, max_length=100, pattern=LABEL_NAME), NoControl]
Annotations = Annotated[
    dict[AnnotationKey, Annotated[StrictStr, Field(max_length=4096), NoNul]],
    Field(max_length=32, description="String values, keys [a-zA-Z_][a-zA-Z0-9_]*, at most 16 KiB."),
]
Labels = Annotated[
    dict[AnnotationKey, Annotated[StrictStr, Field(max_length=4096), NoNul]],
    Field(
        max_length=32,
        description="Extra labels of the rule's alerts: string values, keys [a-zA-Z_][a-zA-Z0-9_]*.",
    ),
]
Op = Literal[">", ">=", "<", "<=", "==", "!="]
Severity = Literal["info", "warning", "critical"]
NoDataPolicy = Literal["ok", "alerting", "keep_last", "nodata"]
ReceiverKind = Literal["webhook", "slack", "alertmanager", "email", "pagerduty"]
Target = Annotated[StrictStr, Field(min_length=1, max_length=2048), NoNul]
Secret = Annotated[StrictStr, Field(min_length=1, max_length=1024), NoNul]
Comment = Annotated[StrictStr, Field(max_length=2000), NoNul]


class MatcherIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: LabelName
    op: Literal["=", "!=", "=~", "!~"]
    value: Annotated[StrictStr, Field(max_length=1024), NoNul]


Matchers = Annotated[
    list[MatcherIn],
    Field(max_length=20, description="Label matchers, all must match (regexes fully anchored)."),
]


def _not_null(value: object) -> object:
    if value is None:
        raise ValueError("must not be null")
    return value


NotNull = AfterValidator(_not_null)


class PatchModel(BaseModel):
    """A patch changes at least one field: an empty body is 422 for everyone (a write that changes
    nothing would otherwise answer 200 without any write being authorised)."""

    @model_validator(mode="after")
    def _not_empty(self) -> PatchModel:
        if not self.model_fields_set:
            raise ValueError("nothing to change: give at least one field")
        return self


def not_nullable(*nullable: str) -> Callable[[JsonDict], None]:
    """json_schema_extra of a patch model: its fields are optional but null only where ``nullable``.

    (The fields are typed ``X | None`` so that an absent field can be told from a given one; NotNull
    rejects an explicit null with the field's path, and the published schema does not offer it.)
    """

    def strip(schema: JsonDict) -> None:
        properties = schema.get("properties")
        assert isinstance(properties, dict)
        for name, prop in properties.items():
            if name in nullable or not isinstance(prop, dict):
                continue
            options = prop.pop("anyOf", None)
            if isinstance(options, list):
                rest = [o for o in options if o != {"type": "null"}]
                if len(rest) == 1 and isinstance(rest[0], dict):
                    prop.update(rest[0])
                else:
                    prop["anyOf"] = rest
            if "default" in prop and prop["default"] is None:
                del prop["default"]
        schema["minProperties"] = 1

    return strip


# -- rules ------------------------------------------------------------------------------------------------
class RuleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project_id: UUID
    name: Name
    description: Description = ""
    metric: RuleMetric
    matchers: Matchers = Field(default_factory=list)
    agg: Annotated[str, Field(max_length=32, pattern=AGGREGATION)] = "sum"
    by: GroupBy | None = None
    window: Window = "5m"
    op: Op
    threshold: Threshold
    for_duration: ForDuration = "0s"
    keep_firing_for: KeepFiringFor = "0s"
    resolve_threshold: ResolveThreshold | None = None
    severity: Severity = "warning"
    annotations: Annotations = Field(default_factory=dict)
    labels: Labels = Field(default_factory=dict)
    no_data_after: NoDataAfter | None = None
    no_data_policy: NoDataPolicy = "ok"
    group_wait: GroupWait = "0s"
    group_interval: GroupInterval = "5m"
    repeat_interval: RepeatInterval = "4h"
    receiver_ids: ReceiverIds = Field(default_factory=list)
    enabled: StrictBool = True


class RulePatch(PatchModel):
    """Only the fields present (at least one); ``by: null`` (one alert per series), ``resolve_threshold:
    null`` (the threshold) and ``no_data_after: null`` (the default) are values, others may not be null."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra=not_nullable("by", "resolve_threshold", "no_data_after")
    )

    name: Annotated[Name | None, NotNull] = None
    description: Annotated[Description | None, NotNull] = None
    metric: Annotated[RuleMetric | None, NotNull] = None
    matchers: Annotated[Matchers | None, NotNull] = None
    agg: Annotated[Annotated[str, Field(max_length=32, pattern=AGGREGATION)] | None, NotNull] = None
    by: GroupBy | None = None
    window: Annotated[Window | None, NotNull] = None
    op: Annotated[Op | None, NotNull] = None
    threshold: Annotated[Threshold | None, NotNull] = None
    for_duration: Annotated[ForDuration | None, NotNull] = None
    keep_firing_for: Annotated[KeepFiringFor | None, NotNull] = None
    resolve_threshold: ResolveThreshold | None = None
    severity: Annotated[Severity | None, NotNull] = None
    annotations: Annotated[Annotations | None, NotNull] = None
    labels: Annotated[Labels | None, NotNull] = None
    no_data_after: NoDataAfter | None = None
    no_data_policy: Annotated[NoDataPolicy | None, NotNull] = None
    group_wait: Annotated[GroupWait | None, NotNull] = None
    group_interval: Annotated[GroupInterval | None, NotNull] = None
    repeat_interval: Annotated[RepeatInterval | None, NotNull] = None
    receiver_ids: Annotated[ReceiverIds | None, NotNull] = None
    enabled: Annotated[StrictBool | None, NotNull] = None


class Matcher(BaseModel):
    label: str
    op: str
    value: str


class Rule(BaseModel):
    id: UUID
    project_id: UUID
    name: str
    description: str
    metric: str
    matchers: list[Matcher]
    agg: str
    by: list[str] | None = Field(description="Group-by labels; null: each series is its own alert.")
    window: str = Field(description="Evaluation window, e.g. 5m.")
    op: str
    threshold: float
    for_duration: str = Field(description="How long the condition must hold before the alert fires.")
    keep_firing_for: str = Field(description="How long a firing alert stays firing once the condition stops.")
    resolve_threshold: float | None = Field(
        description="Hysteresis: a firing alert resolves only past this value; null: the threshold."
    )
    severity: str
    annotations: dict[str, str]
    labels: dict[str, str] = Field(
        description="Extra labels of the rule's alerts, sent with every notification."
    )
    no_data_after: str | None = Field(
        description="A group without data for this long is 'no data'; null: 3 x window, at least 2m."
    )
    no_data_policy: NoDataPolicy = Field(
        description="What a group without data becomes: ok, alerting, keep_last (no change) or nodata."
    )
    group_wait: str
    group_interval: str
    repeat_interval: str
    receiver_ids: list[UUID]
    enabled: bool
    created_by: UUID | None
    created_at: datetime
    updated_at: datetime


class RuleList(BaseModel):
    rules: list[Rule]


# -- receivers ----------------------------------------------------------------------------------------------
class ReceiverCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project_id: UUID
    name: Name
    kind: ReceiverKind
    target: Target | None = Field(
        default=None,
        description="http(s) URL (webhook, alertmanager), https URL (slack), e-mail address (email) or the "
        f"PagerDuty Events API v2 URL (pagerduty; default {PAGERDUTY_EVENTS_URL}). Required but for pagerduty.",
    )
    secret: Secret | None = Field(
        default=None,
        description="Webhook signing key / bearer token; the routing key of a pagerduty receiver (required "
        "there). Write-only: never returned.",
    )

    def effective_target(self) -> str | None:
        """The target, or PagerDuty's events endpoint for a pagerduty receiver without one."""
        if self.target is None and self.kind == "pagerduty":
            return PAGERDUTY_EVENTS_URL
        return self.target


class ReceiverPatch(PatchModel):
    """Only the fields present change (at least one); ``secret: null`` removes the secret."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=not_nullable("secret"))

    name: Annotated[Name | None, NotNull] = None
    kind: Annotated[ReceiverKind | None, NotNull] = None
    target: Annotated[Target | None, NotNull] = None
    secret: Secret | None = None


# Hosts of incoming-webhook URLs whose path or query is the credential (Slack, Discord, Microsoft Teams /
# Power Automate, Google Chat, Zapier): masked whatever the receiver's kind, so that saving such a URL as a
# plain webhook, or changing the kind, does not reveal it
SECRET_URL_HOSTS = frozenset(
    {
        "hooks.slack.com",
        "discord.com",
        "discordapp.com",
        "ptb.discord.com",
        "canary.discord.com",
        "outlook.office.com",
        "outlook.office365.com",
        "chat.googleapis.com",
        "hooks.zapier.com",
    }
)
SECRET_URL_SUFFIXES = (".webhook.office.com", ".logic.azure.com", ".environment.api.powerplatform.com")


def is_secret_url(target: str) -> bool:
    """Whether a URL's host is a known incoming-webhook host (its path or query is the credential)."""
    try:
        host = (urlsplit(target).hostname or "").rstrip(".").lower()
    except ValueError:
        return False
    return host in SECRET_URL_HOSTS or host.endswith(SECRET_URL_SUFFIXES)


def mask_target(kind: str, target: str) -> str:
    """Slack receivers, and URLs of known incoming-webhook hosts whatever the kind: only the scheme and
    host are shown (the rest of such a URL is a credential)."""
    if kind != "slack" and not is_secret_url(target):
        return target
    parts = urlsplit(target)
    return f"{parts.scheme}://{parts.netloc}/…"


class Receiver(BaseModel):
    id: UUID
    project_id: UUID
    name: str
    kind: str
    target: str = Field(
        description="The target; Slack receivers and URLs of known incoming-webhook hosts (Slack, Discord, "
        "Teams, Google Chat, Zapier) masked as scheme://host/…."
    )
    has_secret: bool = Field(description="Whether a secret is set (the secret itself is never returned).")
    created_by: UUID | None
    created_at: datetime
    updated_at: datetime


class ReceiverList(BaseModel):
    receivers: list[Receiver]


# -- silences ----------------------------------------------------------------------------------------------
SILENCE_MAX = timedelta(days=90)


class SilenceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project_id: UUID
    rule_id: UUID | None = Field(default=None, description="Only this rule; null: every rule of the project.")
    matchers: Matchers = Field(default_factory=list)
    starts_at: Timestamp | None = Field(default=None, description="Default: now (the database's clock).")
    ends_at: Timestamp = Field(
        description="After starts_at and in the future; at most 90 days after starts_at."
    )
    comment: Comment = ""

    def period(self, now: datetime) -> tuple[datetime | None, datetime, datetime]:
        """(starts_at as given, ends_at, effective start) in UTC; the effective start is ``now`` (the
        database's clock, whose now() is the column default) when no starts_at is given."""
        start = self.starts_at
        if start is not None and start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        end = self.ends_at.replace(tzinfo=UTC) if self.ends_at.tzinfo is None else self.ends_at
        return start, end, start or now


class Silence(BaseModel):
    id: UUID
    project_id: UUID
    rule_id: UUID | None
    matchers: list[Matcher]
    starts_at: datetime
    ends_at: datetime
    comment: str
    state: Literal["pending", "active", "expired"] = Field(
        description="pending: starts later; active: in effect now; expired: ended."
    )
    created_by: UUID | None
    created_at: datetime


class SilenceList(BaseModel):
    silences: list[Silence]


# -- mute windows ------------------------------------------------------------------------------------------
TIME_OF_DAY = r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$"
END_OF_DAY = r"^(([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?|24:00(:00)?)$"
StartTime = Annotated[StrictStr, Field(pattern=TIME_OF_DAY, description="HH:MM or HH:MM:SS, local time.")]
EndTime = Annotated[
    StrictStr,
    Field(
        pattern=END_OF_DAY,
        description="HH:MM or HH:MM:SS, local time; 24:00 is the end of the day; before start_time: the "
        "window runs past midnight.",
    ),
]
Weekday = Annotated[StrictInt, Field(ge=1, le=7)]
Weekdays = Annotated[
    list[Weekday],
    Field(
        min_length=1, max_length=7, description="ISO weekdays the window starts on (1 = Monday, 7 = Sunday)."
    ),
    AfterValidator(_unique),
]
TimeZone = Annotated[
    StrictStr, Field(min_length=1, max_length=64, description="IANA time zone, e.g. Europe/Berlin."), NoNul
]
ALL_WEEK = [1, 2, 3, 4, 5, 6, 7]


class MuteWindowCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project_id: UUID
    rule_id: UUID | None = Field(default=None, description="Only this rule; null: every rule of the project.")
    name: Name
    weekdays: Weekdays = Field(default_factory=lambda: list(ALL_WEEK))
    start_time: StartTime
    end_time: EndTime
    time_zone: TimeZone


class MuteWindowPatch(PatchModel):
    """Only the fields present change (at least one); the project and the rule of a window are fixed."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=not_nullable())

    name: Annotated[Name | None, NotNull] = None
    weekdays: Annotated[Weekdays | None, NotNull] = None
    start_time: Annotated[StartTime | None, NotNull] = None
    end_time: Annotated[EndTime | None, NotNull] = None
    time_zone: Annotated[TimeZone | None, NotNull] = None


class MuteWindow(BaseModel):
    id: UUID
    project_id: UUID
    rule_id: UUID | None
    name: str
    weekdays: list[int]
    start_time: str
    end_time: str
    time_zone: str
    created_by: UUID | None
    created_at: datetime


class MuteWindowList(BaseModel):
    mute_windows: list[MuteWindow]


# -- alert state: active alerts, deliveries, receiver tests, previews --------------------------------------
ActiveState = Literal["pending", "firing", "recovering", "nodata"]
AlertState = Literal["pending", "firing", "recovering", "resolved", "inactive", "nodata"]
DeliveryStatus = Literal["pending", "sent", "dead"]
DeliveryKind = Literal["notification", "repeat", "test"]


class ActiveAlert(BaseModel):
    rule_id: UUID
    rule_name: str
    fingerprint: str = Field(description="The alert's stable key (PagerDuty dedup_key).")
    labels: dict[str, Any] = Field(
        description="The group's labels, the rule's labels, alertname and severity."
    )
    state: ActiveState
    value: float | None = Field(description="The last value (null: none, or not a finite number).")
    since: datetime | None = Field(
        description="When it entered its state: active_at (pending), fired_at (firing, nodata) or "
        "recovering_at (recovering)."
    )
    active_at: datetime | None
    fired_at: datetime | None
    recovering_at: datetime | None
    last_data_at: datetime | None = Field(description="Data time of the group's last data.")
    evaluated_at: datetime = Field(description="Data time of the last evaluation (not the wall clock).")


class ActiveAlertList(BaseModel):
    alerts: list[ActiveAlert]


class CarriedAlert(BaseModel):
    fingerprint: str | None
    state: str | None = Field(
        description="What the alert was in this notice (firing, resolved, nodata, ...)."
    )
    status: str | None = Field(description="firing or resolved (Alertmanager's status).")


class Delivery(BaseModel):
    id: int
    key: str = Field(description="The idempotency key every attempt carries (webhook-id, Message-Id, ...).")
    rule_id: UUID | None = Field(description="null for a test message.")
    receiver_id: UUID
    kind: DeliveryKind
    status: DeliveryStatus = Field(description="pending (not sent yet, or retrying), sent, dead (gave up).")
    attempts: int
    last_status: int | None = Field(description="The receiver's last answer (HTTP or SMTP status).")
    last_error: str | None = Field(description="Why the last attempt failed (never a URL or secret).")
    created_at: datetime
    sent_at: datetime | None
    next_attempt_at: datetime | None = Field(
        description="When a pending message is tried next; null otherwise."
    )
    alerts: list[CarriedAlert] = Field(description="The alerts the message carried (at most 100).")


class DeliveryList(BaseModel):
    deliveries: list[Delivery]


class ReceiverTest(BaseModel):
    message_id: int
    key: str
    status: DeliveryStatus
    attempts: int
    last_status: int | None
    last_error: str | None
    detail: str = Field(description="What happened, in words.")


class PreviewTransition(BaseModel):
    at: datetime = Field(description="The evaluation (a whole minute) at which the alert changed.")
    fingerprint: str
    labels: dict[str, Any]
    state: AlertState = Field(description="What the alert became.")
    previous: str | None = Field(description="The state it left.")
    value: float | None


class RulePreview(BaseModel):
    rule_id: UUID
    from_: datetime = Field(alias="from")
    to: datetime
    step: str | None = Field(description="The step asked for; null: the default (at most 720 evaluations).")
    transitions: list[PreviewTransition]


# -- history -----------------------------------------------------------------------------------------------
class AlertEvent(BaseModel):
    id: int
    project_id: UUID
    rule_id: UUID | None = Field(description="null when the rule has been deleted since.")
    rule_name: str
    labels: dict[str, Any]
    state: AlertState = Field(description="What the alert became.")
    previous: str | None = Field(description="The state it left (null for events of the first alert worker).")
    fingerprint: str | None = Field(description="The alert instance (as in the active alerts).")
    value: float | None
    at: datetime


class AlertHistory(BaseModel):
    events: list[AlertEvent]
