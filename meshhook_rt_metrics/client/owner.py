"""What an instrument needs of the registry that owns it: limits, redaction and the counters of what went
wrong. A protocol, so that ``instruments`` does not import ``registry`` (which imports the instruments)."""

from __future__ import annotations

from typing import Protocol


class InstrumentOwner(Protocol):
    """The registry as its instruments see it (``Registry`` satisfies it)."""

    max_label_sets: int
    strict: bool
    max_label_value_length: int

    def redact_cached(self, text: str) -> str: ...

    def invalid_value(self, metric: str, v: object, reason: str) -> None: ...

    def count_invalid(self, metric: str) -> None: ...

    def dropped_label_set(self, metric: str) -> None: ...

    def callback_failed(self, metric: str) -> None: ...
