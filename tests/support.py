"""Helpers shared by tests (no fixtures here: those live in conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TestDatabase:
    """A database of the test cluster: ``url`` as the migration owner ``postgres``, ``admin_url`` as superuser."""

    __test__ = False
    name: str
    url: str
    admin_url: str
