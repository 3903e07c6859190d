"""SupabaseSink and MetricsClient through the local stack's gateway (the Data API RPC), end to end."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from meshhook_rt_metrics.client import InvalidBatchError, MetricsClient, NotAuthorisedError, SupabaseSink
from tests.client.test_sinks import rollup_totals
from tests.localstack.conftest import GatewayProcess, start_gateway
from tests.support import TestDatabase


@pytest.fixture(scope="module")
def api(db: TestDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """The real gateway subprocess in front of this module's database."""
    yield from start_gateway(db, tmp_path_factory.mktemp("gateway"))


def _batch(project: str, batch_id: str, **point: Any) -> dict[str, Any]:
    p = {"name": "meshhook_webhook_requests_total", "kind": "counter", "labels": {"outcome": "accepted"},
         "ts": time.time(), "count": 1, "sum": 1, **point}  # fmt: skip
    return {"project_id": project, "source": "gw:1:abcdef", "batch_id": batch_id, "points": [p]}


def test_client_through_the_data_api_with_the_service_key(
    api: GatewayProcess, db: TestDatabase, tmp_path: Path
) -> None:
    project = str(uuid.uuid4())
    with MetricsClient(
        project_id=project, supabase_url=api.url, supabase_key=api.service_key, spool_dir=tmp_path,
        host_metrics=False,
    ) as client:  # fmt: skip
        requests = client.counter("meshhook_webhook_requests_total", labels=("outcome",))
        step = client.histogram("meshhook_workflow_step_duration_seconds", labels=("node_type",))
        for i in range(1000):
            requests.inc(outcome="accepted")
            step.observe((i % 10 + 1) / 100, node_type="http_call")
        assert client.flush() is True
    assert rollup_totals(db.url, project, "meshhook_webhook_requests_total")["sum"] == 1000
    assert rollup_totals(db.url, project, "meshhook_workflow_step_duration_seconds")["count"] == 1000


def test_member_token_ingests_non_member_and_anon_are_refused(api: GatewayProcess, db: TestDatabase) -> None:
    project, member = str(uuid.uuid4()), uuid.uuid4()
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute("insert into metrics.projects (id) values (%s)", (project,))
        conn.execute(
            "insert into metrics.project_members (project_id, user_id, role) values (%s, %s, 'editor')",
            (project, member),
        )
    as_member = SupabaseSink(api.url, api.anon_key, access_token=api.user_token(member))
    assert as_member.send(_batch(project, "m1"))["status"] == "accepted"
    with pytest.raises(NotAuthorisedError):
        SupabaseSink(api.url, api.anon_key, access_token=api.user_token(uuid.uuid4())).send(
            _batch(project, "m2")
        )
    with pytest.raises(NotAuthorisedError):
        SupabaseSink(api.url, api.anon_key).send(_batch(project, "m3"))
    with pytest.raises(InvalidBatchError, match=r"points\[0\]\.labels\.foo-bar"):
        as_member.send(_batch(project, "m4", labels={"foo-bar": "x"}))
    assert rollup_totals(db.url, project, "meshhook_webhook_requests_total")["sum"] == 1
