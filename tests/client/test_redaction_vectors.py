"""The redaction contract shared with the edge function: every case of tests/redaction_vectors.json through the
client's default_redactor (supabase/functions/metrics-ingest/redact_test.ts runs the same file through the
TypeScript twin, supabase/functions/metrics-ingest/redact.ts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshhook_rt_metrics.client.labels import (
    _SECRET_PATTERNS,
    REDACTED,
    _reference_redactor,
    default_redactor,
)

VECTORS_FILE = Path(__file__).resolve().parents[1] / "redaction_vectors.json"
VECTORS: list[dict[str, str]] = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))


def test_redaction_vectors_are_well_formed() -> None:
    assert len(VECTORS) >= 40
    for vector in VECTORS:
        assert set(vector) == {"note", "value", "redacted"}, vector
        assert all(isinstance(v, str) for v in vector.values()), vector
    values = [v["value"] for v in VECTORS]
    assert len(set(values)) == len(values), "duplicate values"


@pytest.mark.parametrize("vector", VECTORS, ids=[v["note"] for v in VECTORS])
def test_redaction_vector(vector: dict[str, str]) -> None:
    assert default_redactor(vector["value"]) == vector["redacted"]
    assert _reference_redactor(vector["value"]) == vector["redacted"]


def test_redaction_vectors_cover_every_pattern_and_values_that_must_not_change() -> None:
    """Each pattern alone changes at least one vector, so a port that drops or breaks a pattern fails a vector."""
    for index, (pattern, replacement) in enumerate(_SECRET_PATTERNS):
        assert any(pattern.sub(replacement, v["value"]) != v["value"] for v in VECTORS), (
            f"no vector exercises pattern {index}: {pattern.pattern}"
        )
    kept = [v["value"] for v in VECTORS if v["value"] == v["redacted"]]
    assert "6f1c2a9e-3b7d-4c5e-9a10-1234567890ab" in kept  # identifiers are not secrets
    assert "/api/hooks/[slug]" in kept
    assert any(not v.isascii() for v in kept)
    assert any(v.isdigit() for v in kept)
    assert sum(REDACTED in v["redacted"] for v in VECTORS) >= 30
