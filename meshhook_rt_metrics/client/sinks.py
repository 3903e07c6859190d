"""Where batches go: PostgreSQL directly (trusted, fastest) or the Supabase Data API (RPC).

Both speak the same batch wire format and map failures onto the outcomes the client acts on:

- ``InvalidBatchError``: SQLSTATE class 22 (data exception, e.g. 22023 from ``metrics.ingest``'s
  validation) or 23 (integrity constraint), directly or as the ``code`` of a PostgREST error body: the
  batch itself is invalid. The client retries it a few times (strikes), then drops it and counts it.
- ``BatchTooLargeError``: HTTP 413 (a proxy's body limit): the client splits the batch in two.
- everything else (``SinkError``: connection, timeout, 5xx, deadlock, statement timeout; its
  subclasses ``NotAuthorisedError``: 42501 / 401 / 403, and ``ServerError``: any other error, e.g. a
  function not migrated yet (42883 / 404), a schema not exposed (406), another 400): kept in the spool
  and retried with backoff, forever; only the spool's byte cap ever drops such a batch.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import TYPE_CHECKING, Any, Protocol

from meshhook_rt_metrics.client.known_series import KnownSeries

if TYPE_CHECKING:  # imported where used, as psycopg is: a worker pays only for the sink it ships through
    import httpx

Batch = dict[str, Any]


class SinkError(Exception):
    """The backend could not take the batch now; retry later."""


class ServerError(SinkError):
    """The backend answered with an error that does not say the batch is invalid (a configuration or
    server problem: function or schema missing, deadlock, internal error): retried with backoff."""


class BatchTooLargeError(SinkError):
    """HTTP 413: the request body is over a proxy's limit; the client splits the batch and resends."""


class NotAuthorisedError(SinkError):
    """SQLSTATE 42501 / HTTP 401-403: credentials or project membership are wrong (retried: may be fixed)."""


class InvalidBatchError(Exception):
    """SQLSTATE class 22 / 23 (through the Data API: that ``code``, usually HTTP 400 or 409): the batch
    itself is invalid and was not stored."""


_INVALID_SQLSTATE = re.compile(r"^2[23][0-9A-Z]{3}$")


def is_invalid_batch_state(sqlstate: str | None) -> bool:
    """SQLSTATE classes 22 (data exception) and 23 (integrity constraint violation)."""
    return bool(sqlstate) and _INVALID_SQLSTATE.match(sqlstate or "") is not None


class Sink(Protocol):
    def send(self, batch: Batch) -> dict[str, Any]: ...

    def close(self) -> None: ...

    def after_fork(self) -> None: ...


def encode(batch: Batch) -> str:
    return json.dumps(batch, separators=(",", ":"), allow_nan=False)


_URL_PASSWORD = re.compile(r"(://[^/:@\s]*:)[^@\s]*@")


def redact_url(url: str) -> str:
    return _URL_PASSWORD.sub(r"\1***@", url)


_FORK_ORPHANS: list[Any] = []
"""Connections inherited through fork: kept referenced so their finaliser never closes the parent's socket."""


def _path_unavailable(exc: Exception) -> bool:
    """The known-series function is missing or this role may not execute it (not: may not write a project)."""
    from psycopg import errors

    return isinstance(exc, errors.UndefinedFunction) or (
        isinstance(exc, errors.InsufficientPrivilege) and "permission denied for function" in str(exc)
    )


class PostgresSink:
    """``select metrics.ingest(batch)`` over one psycopg 3 connection, reconnecting after failures; with
    ``known_series`` (the default), batches whose series it has resolved take ``metrics.ingest_known``
    instead (``client/known_series.py``), unless the login role may not call it or the database does not
    have it yet (then the RPC, from then on)."""

    def __init__(self, url: str, *, timeout: float = 5.0, known_series: bool = True) -> None:
        self._url = url
        self._timeout = timeout
        self._conn: Any = None
        self._known = KnownSeries() if known_series else None

    def __repr__(self) -> str:
        return f"PostgresSink({redact_url(self._url)!r})"

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(
            self._url,
            autocommit=True,
            connect_timeout=max(1, round(self._timeout)),
            application_name="meshhook-metrics-client",
            # generous: a statement cancelled every time would be retried forever
            options=f"-c statement_timeout={int(max(30.0, 6 * self._timeout) * 1000)}",
        )

    def send(self, batch: Batch) -> dict[str, Any]:
        import psycopg
        from psycopg import errors

        try:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            fast = self._send_known(batch)
            if fast is not None:
                return fast
            row = self._conn.execute("select metrics.ingest(%s::jsonb)", (encode(batch),)).fetchone()
            self._learn(batch)
        except psycopg.Error as exc:
            state = getattr(exc, "sqlstate", None)
            if is_invalid_batch_state(state):  # 22xxx / 23xxx: the batch itself is invalid
                raise InvalidBatchError(str(exc).strip()) from exc
            self._drop()
            if isinstance(exc, errors.InsufficientPrivilege):
                raise NotAuthorisedError(str(exc).strip()) from exc
            detail = f"{type(exc).__name__}: {redact_url(str(exc).strip())}"
            if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
                raise SinkError(detail) from exc  # connection, statement timeout, deadlock, ...
            raise ServerError(f"{detail} (SQLSTATE {state or '?'})") from exc  # e.g. 42883: not migrated
        except OSError as exc:
            self._drop()
            raise SinkError(f"{type(exc).__name__}: {redact_url(str(exc).strip())}") from exc
        result = row[0] if row else None
        return result if isinstance(result, dict) else {"status": "accepted"}

    def _send_known(self, batch: Batch) -> dict[str, Any] | None:
        """The known-series path's result, or None: series not resolved yet, the role may not take the path
        or the database lacks it, or the path refused the batch (then the RPC gives the verdict)."""
        import psycopg

        if self._known is None:
            return None
        try:
            return self._known.send(self._conn, batch)
        except psycopg.Error as exc:
            state = getattr(exc, "sqlstate", None) or ""
            if is_invalid_batch_state(state):
                self._known.forget(str(batch["project_id"]))
            elif _path_unavailable(exc):
                self._known = None  # no EXECUTE on metrics.ingest_known, or not migrated: the RPC from now on
            elif not state.startswith("42"):  # connection, timeout, ...: the send fails, the batch is spooled
                raise
            return None  # any other refusal (e.g. 42501 for the project): the RPC's verdict stands

    def _learn(self, batch: Batch) -> None:
        """After the RPC stored the batch: learn its series ids. Only an optimisation, so a failure never
        fails the send (the batch is stored); a role that may not read the series gets the RPC only."""
        import psycopg
        from psycopg import errors

        if self._known is None:
            return
        try:
            self._known.learn(self._conn, batch)
        except errors.InsufficientPrivilege:
            self._known = None
        except psycopg.Error:
            pass  # e.g. the connection dropped: the next send reconnects, a later RPC learns again

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        self._drop()

    def after_fork(self) -> None:
        if self._conn is not None:
            _FORK_ORPHANS.append(self._conn)  # never close: the socket is the parent's
        self._conn = None


class SupabaseSink:
    """``POST {url}/rest/v1/rpc/ingest`` with ``Content-Profile: metrics`` (httpx, keep-alive)."""

    def __init__(self, url: str, key: str, *, timeout: float = 5.0, access_token: str | None = None) -> None:
        self._endpoint = url.rstrip("/") + "/rest/v1/rpc/ingest"
        self._headers = {
            "apikey": key,
            "Authorization": f"Bearer {access_token or key}",
            "Content-Profile": "metrics",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        self._timeout = timeout
        self._http: httpx.Client | None = None

    def __repr__(self) -> str:
        return f"SupabaseSink({self._endpoint!r})"

    def send(self, batch: Batch) -> dict[str, Any]:
        import httpx

        body = ('{"batch":' + encode(batch) + "}").encode()
        try:
            if self._http is None:
                self._http = httpx.Client(timeout=self._timeout)
            response = self._http.post(self._endpoint, content=body, headers=self._headers)
        except httpx.HTTPError as exc:
            self._drop()
            raise SinkError(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code < 300:
            try:
                result = response.json()
            except ValueError:
                return {"status": "accepted"}
            return result if isinstance(result, dict) else {"status": "accepted"}
        code, message = _error_of(response)
        detail = f"HTTP {response.status_code} {code or ''}: {message}".strip()
        if is_invalid_batch_state(code):  # 22xxx (HTTP 400), 23xxx (HTTP 400 / 409)
            raise InvalidBatchError(detail)
        if response.status_code == 413:
            raise BatchTooLargeError(detail)
        if code == "42501" or response.status_code in (401, 403):
            raise NotAuthorisedError(detail)
        if response.status_code in (408, 425, 429, 502, 503, 504):
            raise SinkError(detail)
        raise ServerError(detail)  # other 4xx / 5xx: configuration or server trouble, retried

    def _drop(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            with contextlib.suppress(Exception):
                http.close()

    def close(self) -> None:
        self._drop()

    def after_fork(self) -> None:
        if self._http is not None:
            _FORK_ORPHANS.append(self._http)
        self._http = None


def _error_of(response: httpx.Response) -> tuple[str | None, str]:
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:500]
    if isinstance(body, dict):
        code = body.get("code")
        message = str(body.get("message") or body.get("msg") or body.get("error") or "")
        return (str(code) if code is not None else None), message[:500]
    return None, str(body)[:500]


SinkSpec = dict[str, Any]
"""What a sink is built from: ``{"kind": "postgres", "url", "timeout"}`` or ``{"kind": "supabase", "url", "key",
"timeout"}``. Holds credentials: never logged, never on a command line (the shipper reads it from its pipe)."""


def sink_for(spec: SinkSpec) -> PostgresSink | SupabaseSink:
    """The sink a spec names; the client's and the shipper process's one way to build it."""
    if spec.get("kind") == "postgres":
        return PostgresSink(str(spec["url"]), timeout=float(spec["timeout"]))
    if spec.get("kind") == "supabase":
        return SupabaseSink(str(spec["url"]), str(spec["key"]), timeout=float(spec["timeout"]))
    raise ValueError(f"unknown sink kind {spec.get('kind')!r} (expected 'postgres' or 'supabase')")


class MemorySink:
    """Keeps batches in a list (tests, dry runs); can be told to fail to exercise the spool. Like
    ``metrics.ingest`` it answers ``duplicate`` for a ``(project_id, source, batch_id)`` seen before."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.fail: Exception | None = None
        self._seen: set[tuple[str, str, str]] = set()

    def send(self, batch: Batch) -> dict[str, Any]:
        if self.fail is not None:
            raise self.fail
        key = (str(batch["project_id"]), str(batch["source"]), str(batch["batch_id"]))
        if key in self._seen:
            return {"status": "duplicate", "points": 0, "series_created": 0, "overflowed": 0}
        self._seen.add(key)
        self.batches.append(json.loads(encode(batch)))
        return {"status": "accepted", "points": len(batch["points"]), "series_created": 0, "overflowed": 0}

    def close(self) -> None:
        pass

    def after_fork(self) -> None:
        self.batches = []
        self._seen = set()
