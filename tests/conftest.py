"""Service fixtures for every test: ONE throwaway PostgreSQL cluster per test session.

Built with the same code path users run (``LocalStack``/``LocalPostgres``, the bootstrap and the
migrator). A template database holds the bootstrapped, migrated schema; tests that need isolation get
a fresh database cloned from it (cheap: a file copy).
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshhook_rt_metrics.db import migrator
from meshhook_rt_metrics.localstack.bootstrap import bootstrap_database, create_database, drop_database
from meshhook_rt_metrics.localstack.postgres import LocalPostgres
from tests.support import TestDatabase

TEMPLATE = "metrics_template"
_names = itertools.count(1)


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalPostgres]:
    """A running cluster with a migrated template database; destroyed at the end of the session.

    Not under pytest's tmp dir: pytest resets that to mode 0700 at every session start, which would lock
    the server's OS user (``postgres`` when tests run as root) out of a concurrently running cluster.
    """
    state_dir = Path(tempfile.mkdtemp(prefix="meshhook-test-"))
    pg = LocalPostgres(state_dir, port=0, fast=True)
    pg.init()
    pg.start()
    bootstrap_database(pg)
    migrator.migrate(pg.url())
    create_database(pg, TEMPLATE)
    migrator.migrate(pg.url(database=TEMPLATE))
    try:
        yield pg
    finally:
        pg.destroy()
        shutil.rmtree(state_dir, ignore_errors=True)


def _fresh(cluster: LocalPostgres) -> TestDatabase:
    name = f"test_{next(_names)}"
    create_database(cluster, name, template=TEMPLATE)
    return TestDatabase(
        name=name,
        url=cluster.url(database=name),
        admin_url=cluster.admin_url(name),
        authenticator_password=cluster.role_password("authenticator"),
    )


@pytest.fixture(scope="module")
def db(cluster: LocalPostgres) -> Iterator[TestDatabase]:
    """A migrated database of its own for each test module."""
    database = _fresh(cluster)
    yield database
    drop_database(cluster, database.name)


@pytest.fixture
def fresh_db(cluster: LocalPostgres) -> Iterator[TestDatabase]:
    """A migrated database of its own for one test (for tests that must see an empty schema)."""
    database = _fresh(cluster)
    yield database
    drop_database(cluster, database.name)
