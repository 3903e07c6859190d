"""Raw query strings against GET /api/metrics and GET /api/metrics/series.

Random, repeated and unknown parameters, huge values, unicode, broken percent-encoding, bad timestamps,
steps, aggregations and matchers: the answer is one of 200, 400, 401, 403, 404, 422, 429 — never a 500 —
with a JSON body. (schemathesis covers the OpenAPI shape; this is about what a query string can hold.)
The app runs in process (Starlette's TestClient) in front of the module's database, with a few points
stored so that valid queries read data.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import event, example, given
from hypothesis import strategies as st

from meshhook_rt_metrics.api import ApiSettings, create_app
from meshhook_rt_metrics.jwt_keys import JwtKeys
from tests.fuzz.conftest import fuzz
from tests.fuzz.strategies import NASTY_TEXT, TRICKY_REGEXES
from tests.support import TestDatabase, add_member, batch, counter, histogram, ingest

SECRET = "test-secret-of-the-fuzz-tests-0123456789abcdef-0123456789abcdef-xyz"
ALLOWED = {200, 400, 401, 403, 404, 414, 422, 429}  # 414: a query string over 8 KiB (docs/api.md)
PROJECT = uuid.uuid4()
ADMIN = uuid.uuid4()
VIEWER = uuid.uuid4()
OUTSIDER = uuid.uuid4()
REQS = "fz_requests_total"
LAT = "fz_latency_seconds"


@pytest.fixture(scope="module")
def client(db: TestDatabase) -> Iterator[TestClient]:
    with psycopg.connect(db.url, autocommit=True) as conn:
        add_member(conn, PROJECT, ADMIN, "admin")
        add_member(conn, PROJECT, VIEWER, "viewer")
        now = time.time()
        ingest(
            conn,
            batch(
                PROJECT,
                [
                    counter(REQS, 3, {"outcome": "ok", "route": "/a"}, ts=now - 120),
                    counter(REQS, 1, {"outcome": "error", "route": "/b"}, ts=now - 60),
                    histogram(LAT, [0.1, 0.2, 1.5], {"route": "/a"}, ts=now - 90),
                ],
            ),
        )
    settings = ApiSettings(
        database_url=db.url,
        jwt_secret=SECRET,  # type: ignore[arg-type]
        pool_min_size=1,
        pool_max_size=4,
        query_rate_per_second=100_000.0,
        query_rate_burst=100_000,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


KEYS = JwtKeys(SECRET)
AUTH = {
    "admin": {"Authorization": f"Bearer {KEYS.user_token(ADMIN)}"},
    "viewer": {"Authorization": f"Bearer {KEYS.user_token(VIEWER)}"},
    "outsider": {"Authorization": f"Bearer {KEYS.user_token(OUTSIDER)}"},
    "service": {"Authorization": f"Bearer {KEYS.service_role_key}"},
    "none": {},
    "garbage": {"Authorization": "Bearer not.a.jwt"},
}

TIMES = st.one_of(
    st.sampled_from(
        [
            "2026-12-06T00:00:00Z",
            "2026-12-06T00:00:00",
            "2026-12-06T00:00:00+14:00",
            "2026-12-06T00:00:00-23:59",
            "2026-12-06",
            "0",
            "-1",
            "1e10",
            "1e20",
            "-62135596800",
            "253402300800",
            "9999999999999999999999",
            "nan",
            "inf",
            "-inf",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999Z",
            "10000-01-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-12-06T24:00:00Z",
            "now",
            "",
            "1.5",
            "1_000",
            "٣",
        ]
    ),
    st.integers(-(2**70), 2**70).map(str),
    st.floats().map(repr),
    st.datetimes().map(lambda d: d.isoformat()),
    NASTY_TEXT,
)
STEPS = st.one_of(
    st.sampled_from(
        ["60s", "1m", "5m", "1h", "1d", "1w", "0", "0s", "999999999w", "1000000000", "1", "-1m", "1y", ""]
    ),
    st.from_regex(r"\d{1,12}[smhdwy]?", fullmatch=True),
    NASTY_TEXT,
)
AGGS = st.one_of(
    st.sampled_from(
        [
            "sum",
            "rate",
            "avg",
            "min",
            "max",
            "last",
            "count",
            "p50",
            "p99.9",
            "P99",
            "SUM",
            "p100",
            "p0",
            "quantile(0.95)",
            "quantile(.5)",
            "quantile(1)",
            "quantile(0)",
            "quantile(2)",
            "quantile(-1)",
            "quantile(0.99999999999999999999)",
            "p99." + "9" * 25,
            "",
            "max ",
        ]
    ),
    NASTY_TEXT,
)
MATCHES = st.one_of(
    st.sampled_from(
        ["outcome=ok", 'outcome!="error"', 'route=~"/a|/b"', 'route!~".*"', "a=", "=x", "__name__=x"]
    ),
    st.sampled_from(TRICKY_REGEXES).map(lambda r: f'route=~"{r}"'),
    st.builds(lambda v: "route=~" + v, NASTY_TEXT),
    st.builds(lambda n: "a=" + "x" * n, st.integers(1020, 1300)),
    NASTY_TEXT,
)
VALUE_BY_KEY: dict[str, st.SearchStrategy[str]] = {
    "project_id": st.one_of(
        st.just(str(PROJECT)),
        st.just(str(PROJECT).upper()),
        st.just(str(PROJECT).replace("-", "")),
        st.just("{" + str(PROJECT) + "}"),
        st.uuids().map(str),
        NASTY_TEXT,
    ),
    "metric": st.one_of(st.sampled_from([REQS, LAT, "fz_missing", "__x", "a" * 201, ""]), NASTY_TEXT),
    "from": TIMES,
    "to": TIMES,
    "step": STEPS,
    "agg": AGGS,
    "match": MATCHES,
    "by": st.one_of(st.sampled_from(["", "route", "outcome", "1a", "é", "a" * 300]), NASTY_TEXT),
    "limit": st.one_of(
        st.sampled_from(["1", "0", "10000", "10001", "-1", "1e3", "99999999999999999999"]), NASTY_TEXT
    ),
}
VALID_BY_KEY = {
    "from": st.sampled_from(["2026-12-06T00:00:00Z", str(int(time.time()) - 3600), "1970-01-01T00:00:00Z"]),
    "to": st.sampled_from(["2100-01-01T00:00:00Z", str(int(time.time())), "now"]),
    "step": st.sampled_from(["60s", "1m", "5m", "1h", "1d"]),
    "agg": st.sampled_from(["sum", "rate", "avg", "p99", "p99.9", "quantile(0.5)", "count", "last"]),
    "match": st.sampled_from(["outcome=ok", 'route=~"/a|/b"', 'route!~".*x"', 'outcome!="error"']),
    "by": st.sampled_from(["", "route", "outcome"]),
    "limit": st.sampled_from(["1", "10", "10000"]),
}
# mostly declared names with a fair share of valid values, so that many requests reach the database
NAMES = st.one_of(
    st.sampled_from(list(VALID_BY_KEY)),
    st.sampled_from(list(VALID_BY_KEY)),
    st.sampled_from(list(VALID_BY_KEY)),
    st.sampled_from(["project_id", "metric", "stp", "", "from_", "project_id[]", "é"]),
    NASTY_TEXT,
)


# printable ASCII left as is, '%', '&' and '=' included (broken escapes, split values); '#' would end the URL
RAW_SAFE = "!$'()*+,;=:@/?[]{}|\\^`~%&\"<>"


@st.composite
def query_strings(draw: st.DrawFn) -> str:
    pairs: list[tuple[str, str]] = []
    if draw(st.integers(0, 9)) > 0:  # mostly a valid core, so the deeper checks run
        pairs += [("project_id", str(PROJECT)), ("metric", draw(st.sampled_from([REQS, LAT])))]
    for _ in range(draw(st.integers(0, 4))):
        key = draw(NAMES)
        nasty = VALUE_BY_KEY.get(key, NASTY_TEXT)
        value = draw(st.one_of(VALID_BY_KEY[key], VALID_BY_KEY[key], nasty) if key in VALID_BY_KEY else nasty)
        pairs.append((key, value))
    if draw(st.integers(0, 4)) == 0:
        pairs += [("match", draw(MATCHES))] * draw(st.integers(18, 24))
    how = draw(st.sampled_from(["quote", "quote", "raw", "plus"]))
    if how == "raw":  # whatever bytes the client library lets through, broken escapes included
        return "&".join(f"{quote(k, safe=RAW_SAFE)}={quote(v, safe=RAW_SAFE)}" for k, v in pairs) + draw(
            st.sampled_from(["", "&", "%", "%zz", "&&=", "%00"])
        )
    return "&".join(
        f"{quote(k, safe='')}={quote(v, safe='' if how == 'quote' else ' ').replace(' ', '+')}"
        for k, v in pairs
    )


def check(client: TestClient, path: str, query: str, who: str) -> None:
    response = client.get(f"{path}?{query}", headers=AUTH[who])
    assert response.status_code in ALLOWED, (
        f"{response.status_code} for {path}?{query[:600]} as {who}: {response.text[:500]}"
    )
    event(f"status {response.status_code}")
    response.json()  # every answer, errors included, is JSON


@fuzz()
@given(
    query_strings(),
    st.sampled_from(["admin", "admin", "admin", "viewer", "outsider", "service", "none", "garbage"]),
)
@example(f"project_id={PROJECT}&metric={REQS}&match=route%3D~%22***%3D(%22", "admin")
@example(f"project_id={PROJECT}&metric={REQS}&from=1e20", "admin")
@example(f"project_id={PROJECT}&metric={REQS}&from=-62135596800&to=253402300800&step=1m", "admin")
@example(f"project_id={PROJECT}&metric={REQS}&step=999999999w", "admin")
@example(f"project_id={PROJECT}&metric={REQS}&agg=quantile(0.99999999999999999999)", "admin")
def test_get_metrics_never_500(client: TestClient, query: str, who: str) -> None:
    check(client, "/api/metrics", query, who)


@fuzz()
@given(
    query_strings(), st.sampled_from(["admin", "admin", "viewer", "outsider", "service", "none", "garbage"])
)
@example(f"project_id={PROJECT}&match=route%3D~%22(%3Fi)a%22", "admin")
@example(f"project_id={PROJECT}&limit=99999999999999999999", "admin")
def test_get_series_never_500(client: TestClient, query: str, who: str) -> None:
    check(client, "/api/metrics/series", query, who)
