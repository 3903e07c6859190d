"""Logging for the service processes: secrets never reach a log file.

The redaction filter sits on the **handlers**, not on loggers: a filter on a logger sees only records logged
to that very logger, while records of its children (``meshhook_rt_metrics.alerting.worker``...) propagate
straight to the handlers. Every service entry point calls ``configure()`` (and ``redact_handlers()`` again
after a library such as uvicorn installs handlers of its own).

What is redacted: JWTs (API keys, access tokens), ``apikey=``/``token=``/``secret=``/``password=``-style
values, ``Authorization: Bearer`` values, the password of URLs and DSNs, and the path and query of every
HTTP(S)/WS URL (receiver URLs such as Slack webhooks carry their secret in the path; scheme, host and port
stay readable).
"""

from __future__ import annotations

import logging
import re

REDACTED = "<redacted>"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # JSON Web Tokens: header.payload.signature, base64url, header always starts with {"  -> eyJ
    (re.compile(r"eyJ[\w-]{2,}\.[\w-]+\.[\w-]*"), REDACTED),
    # scheme://user:password@host -> the password goes
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@\"'<>]*):[^@\s/\"'<>]*@"), r"\1:" + REDACTED + "@"),
    # path and query of web URLs (receiver URLs carry secrets in their path)
    (re.compile(r"(?i)\b((?:https?|wss?)://[^/\s\"'<>?#]+)[/?#][^\s\"'<>]*"), r"\1/" + REDACTED),
    # key=value and key: value for credential-looking keys (query strings, headers, settings reprs)
    (
        re.compile(
            r"(?i)\b((?:apikey|api[_-]?key|access[_-]?token|refresh[_-]?token|token|secret|jwt[_-]?secret|"
            r"service[_-]?key|password|passwd|signing[_-]?secret)[\"']?\s*[=:]\s*[\"']?)[^\s&\"',;)}]+"
        ),
        r"\1" + REDACTED,
    ),
    (re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+"), r"\1" + REDACTED),
)


def redact(text: str) -> str:
    """``text`` with every credential-looking part replaced by ``<redacted>``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactFilter(logging.Filter):
    """A handler filter: rewrites the record's message (and its traceback text) without the secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let the handler report it as usual
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def redact_handlers() -> None:
    """Put the redaction filter on every handler of the root logger and of every logger known so far."""
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, RedactFilter) for f in handler.filters):
                handler.addFilter(RedactFilter())


def configure(
    level: int | str = logging.INFO, fmt: str = "%(asctime)s %(levelname)s %(name)s %(message)s"
) -> None:
    """``logging.basicConfig`` plus redaction on the handlers: the service entry points' logging setup."""
    logging.basicConfig(level=level.upper() if isinstance(level, str) else level, format=fmt)
    redact_handlers()
