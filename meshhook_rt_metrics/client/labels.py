"""Names, label values and secret redaction: everything checked once, on the slow path of a new label set."""

from __future__ import annotations

import re
from collections.abc import Callable

METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
MAX_LABELS = 32
MAX_LABEL_VALUE = 1024
OVERFLOW_VALUE = "__overflow__"
"""Every declared label of the overflow series carries this value."""
REDACTED = "[REDACTED]"

Redactor = Callable[[str], str]


def check_metric_name(name: str) -> None:
    if not isinstance(name, str) or not METRIC_NAME.match(name) or name.startswith("__"):
        raise ValueError(
            f"invalid metric name {name!r}: must match [a-zA-Z_:][a-zA-Z0-9_:]* and not start with '__'"
        )


def check_label_names(metric: str, names: tuple[str, ...]) -> None:
    if len(names) > MAX_LABELS:
        raise ValueError(f"{metric}: at most {MAX_LABELS} labels, got {len(names)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{metric}: duplicate label names in {names!r}")
    for label in names:
        if not isinstance(label, str) or not LABEL_NAME.match(label) or label.startswith("__"):
            raise ValueError(
                f"{metric}: invalid label name {label!r}: must match [a-zA-Z_][a-zA-Z0-9_]* "
                "and not start with '__'"
            )


# The edge function redacts OTLP label values with a TypeScript twin of these patterns
# (supabase/functions/metrics-ingest/redact.ts); tests/redaction_vectors.json is the contract both are tested
# against. Change both or neither.
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # passwords in URLs: scheme://user:password@host -> keep the user, hide the password
    (re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@"), r"\g<head>" + REDACTED + "@"),
    # JWTs (Supabase anon/service keys, user tokens)
    (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), REDACTED),
    # bearer / basic / token authorisation values
    (re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + REDACTED),
    # well-known API key shapes
    (
        re.compile(
            r"\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{8,}|\bsk-[A-Za-z0-9_-]{16,}|\bgh[pousr]_[A-Za-z0-9]{20,}"
            r"|\bxox[abposr]-[A-Za-z0-9-]{10,}|\bAKIA[0-9A-Z]{16}\b|\bsb_(?:secret|publishable)_[A-Za-z0-9_-]{8,}"
            r"|\bAIza[0-9A-Za-z_-]{30,}"
        ),
        REDACTED,
    ),
    # key=value pairs whose key says it is secret. The key word must be followed directly by optional spaces and
    # "=" or ":" (so "tokenizer=", "secretary=", "password_hint=" are not keys) and must not follow a letter or
    # digit ("mytoken=", "v2token=" are other words), but may follow "_" or "-": a prefixed name like
    # "client_secret=", "db_password=", "x-api-key:", "AUTH_TOKEN=" is a secret too. (?<![^\W_]) is "not after a
    # word character other than _" (\b alone failed after "_").
    (
        re.compile(
            r"(?i)(?<![^\W_])"
            r"((?:api[_-]?key|apikey|secret|password|passwd|pwd|token|access[_-]?token)\s*[=:]\s*)[^\s&;,]+"
        ),
        r"\1" + REDACTED,
    ),
    # long opaque high-entropy tokens (hex or base64url of 32+ chars mixing letters and digits)
    # (UUIDs are identifiers, not secrets: left alone)
    (
        re.compile(
            r"\b(?![0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b)"
            r"(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{32,}\b"
        ),
        REDACTED,
    ),
)


_KEY_WORDS = ("key", "secret", "passw", "pwd", "token")
_OPAQUE_RUN = re.compile(r"[A-Za-z0-9_-]{32}")


def _may_match(index: int, value: str, lower: str) -> bool:
    """Cheap necessary condition for ``_SECRET_PATTERNS[index]`` to match an ASCII ``value``.

    Only ever skips a substitution that could not have changed anything (the regexes stay the rule):
    each test is a substring every match of that pattern contains. ``lower`` is ``value.lower()``; the
    ``(?i)`` patterns need it, and it is exact for ASCII text only (``re`` folds e.g. U+017F, the long s, to ``s``),
    so non-ASCII values skip no pattern.
    """
    if index == 0:
        return "://" in value and "@" in value
    if index == 1:
        return "eyJ" in value
    if index == 2:
        return "bearer" in lower or "basic" in lower or "token" in lower
    if index == 4:
        return ("=" in value or ":" in value) and any(w in lower for w in _KEY_WORDS)
    if index == 5:
        return len(value) >= 32 and _OPAQUE_RUN.search(value) is not None
    return True  # the API-key alternation is a single cheap scan


def default_redactor(value: str) -> str:
    """Hide values that look like secrets (JWTs, bearer tokens, API keys, passwords in URLs).

    Label values end up in dashboards, broadcasts and alert notifications: a token that slipped into a
    label would be published far and wide, so we err on the side of redacting. Patterns that cannot
    match (a required substring is missing) are skipped: same result, a fraction of the cost.
    """
    if not value.isascii():
        for pattern, replacement in _SECRET_PATTERNS:
            value = pattern.sub(replacement, value)
        return value
    for index, (pattern, replacement) in enumerate(_SECRET_PATTERNS):
        if _may_match(index, value, value.lower()):
            value = pattern.sub(replacement, value)
    return value


def _reference_redactor(value: str) -> str:
    """Every pattern on every value: the definition ``default_redactor`` must agree with (tests)."""
    for pattern, replacement in _SECRET_PATTERNS:
        value = pattern.sub(replacement, value)
    return value


def no_redaction(value: str) -> str:
    """A redactor that keeps values unchanged (for tests or trusted label values)."""
    return value
