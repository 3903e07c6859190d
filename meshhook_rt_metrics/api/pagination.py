"""Keyset pagination of the service's list endpoints (issue #15, finding 17): one rule, one place.

A listing is ordered by a sort key whose last column is unique (``Keyset``), so the order is total and
stable while rows come and go. A page is asked with ``limit`` (``1..most``) and ``cursor``: the opaque
position after the last row of the previous page. The body keeps its shape (``{"rules": [...]}``); when
more rows remain, the answer carries ``Link: <next page's URL>; rel="next"`` (RFC 8288), the same request
with ``cursor`` set. No ``Link``: that was the last page.

A cursor is base64url JSON ``{"v", "l", "f", "k"}``: version, listing, a digest of the listing's filters
(a cursor of another listing or of other filters is refused, rather than silently skipping rows), and the
sort-key values of the last row, followed by a checksum. It is checked, not secret: a forged cursor only
moves the start of a page within what row-level security already lets the caller see. Any cursor that does
not decode, fails its checksum or does not fit the listing is a 422 at ``["query", "cursor"]``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar
from uuid import UUID

from fastapi import Depends, Query, Request, Response

from meshhook_rt_metrics.api.errors import ErrorDetail, invalid_request

T = TypeVar("T")
KeyKind = Literal["text", "uuid", "timestamptz", "bigint"]
VERSION = 1
DEFAULT_LIMIT = 100
MAX_LIMIT = 500
MAX_CURSOR = 2048
_CHECK_KEY = b"meshhook-metrics-cursor-v1"  # a checksum's key, not a secret (see the module's docstring)
_CHECK_BYTES = 9


@dataclass(frozen=True)
class Key:
    """One column of a sort key: its SQL expression (never null), its type, its direction."""

    expr: str
    kind: KeyKind
    descending: bool = False


@dataclass(frozen=True)
class Keyset:
    """A listing's name and its sort key; the last column must be unique (the tie-breaker)."""

    listing: str
    keys: tuple[Key, ...]

    def order_by(self) -> str:
        return ", ".join(f"{k.expr} desc" if k.descending else k.expr for k in self.keys)

    def after(self, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """SQL condition (and its parameters) of the rows after the position ``values``.

        One direction: a row comparison, which an index on the key serves; mixed directions: the
        lexicographic expansion ``k1 > v1 or (k1 = v1 and k2 < v2) ...``.
        """
        casts = [f"%s::{k.kind}" for k in self.keys]
        if len({k.descending for k in self.keys}) == 1:
            op = "<" if self.keys[0].descending else ">"
            left = ", ".join(k.expr for k in self.keys)
            return f"({left}) {op} ({', '.join(casts)})", list(values)
        terms: list[str] = []
        params: list[Any] = []
        for i, key in enumerate(self.keys):
            equal = [f"{k.expr} = {cast}" for k, cast in zip(self.keys[:i], casts[:i], strict=True)]
            op = "<" if key.descending else ">"
            terms.append("(" + " and ".join([*equal, f"{key.expr} {op} {casts[i]}"]) + ")")
            params.extend(values[: i + 1])
        return "(" + " or ".join(terms) + ")", params


def cursor_problem(message: str) -> Exception:
    return invalid_request([ErrorDetail(loc=["query", "cursor"], message=message, type="value_error")])


def _digest(keyset: Keyset, filters: Mapping[str, Any]) -> str:
    text = json.dumps(
        [keyset.listing, {k: None if v is None else str(v) for k, v in sorted(filters.items())}]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check(payload: bytes) -> bytes:
    return hmac.new(_CHECK_KEY, payload, hashlib.sha256).digest()[:_CHECK_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _wire(kind: KeyKind, value: Any) -> Any:
    if kind == "timestamptz":
        assert isinstance(value, datetime)
        return value.isoformat()
    if kind == "bigint":
        return int(value)
    return str(value)


def _unwire(kind: KeyKind, value: Any) -> Any:
    """A key value from a cursor, of the key's type (ValueError otherwise)."""
    if kind == "bigint":
        if type(value) is not int:
            raise ValueError("not an integer")
        return value
    if not isinstance(value, str):
        raise ValueError("not a string")
    if kind == "uuid":
        return UUID(value)
    if kind == "timestamptz":
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError("no time zone")
        return moment
    return value


def encode_cursor(keyset: Keyset, filters: Mapping[str, Any], values: Sequence[Any]) -> str:
    wire = [_wire(k.kind, v) for k, v in zip(keyset.keys, values, strict=True)]
    payload = json.dumps(
        {"v": VERSION, "l": keyset.listing, "f": _digest(keyset, filters), "k": wire}, separators=(",", ":")
    ).encode()
    return _b64(payload + _check(payload))


def decode_cursor(keyset: Keyset, filters: Mapping[str, Any], cursor: str) -> list[Any]:
    """The position a cursor names; 422 at ``["query", "cursor"]`` for anything else."""
    try:
        raw = _unb64(cursor)
    except (binascii.Error, ValueError):
        raise cursor_problem("invalid cursor: not one this service issued (not base64url)") from None
    payload, check = raw[:-_CHECK_BYTES], raw[-_CHECK_BYTES:]
    if len(raw) <= _CHECK_BYTES or not hmac.compare_digest(check, _check(payload)):
        raise cursor_problem("invalid cursor: damaged or altered; use the Link header's URL as given")
    try:
        data = json.loads(payload)
    except ValueError:
        raise cursor_problem("invalid cursor: damaged or altered") from None
    if not isinstance(data, dict) or data.get("v") != VERSION:
        raise cursor_problem("invalid cursor: from another version of the service; start again without it")
    if data.get("l") != keyset.listing or data.get("f") != _digest(keyset, filters):
        raise cursor_problem(
            "invalid cursor: it belongs to another listing or other filters; start again without it"
        )
    wire = data.get("k")
    if not isinstance(wire, list) or len(wire) != len(keyset.keys):
        raise cursor_problem("invalid cursor: damaged or altered")
    try:
        return [_unwire(k.kind, v) for k, v in zip(keyset.keys, wire, strict=True)]
    except ValueError:
        raise cursor_problem("invalid cursor: damaged or altered") from None


@dataclass(frozen=True)
class Page:
    """One page of one listing: the SQL to read it and the ``Link`` to the next one."""

    keyset: Keyset
    filters: Mapping[str, Any]
    limit: int
    condition: str
    params: list[Any]
    request: Request

    @property
    def tail(self) -> str:
        """``order by ... limit n``: one row more than the page, to know whether more remain."""
        return f" order by {self.keyset.order_by()} limit {self.limit + 1}"

    def finish(self, rows: Sequence[T], key_of: Callable[[T], Sequence[Any]], response: Response) -> list[T]:
        """This page's rows; sets ``Link: <...>; rel="next"`` when a row beyond them was read."""
        page = list(rows[: self.limit])
        if len(rows) > self.limit:
            cursor = encode_cursor(self.keyset, self.filters, key_of(page[-1]))
            url = self.request.url.include_query_params(cursor=cursor)
            response.headers["Link"] = f'<{url}>; rel="next"'
        return page


@dataclass(frozen=True)
class PageRequest:
    """``limit`` and ``cursor`` of a request, and the request itself (for the next page's URL)."""

    limit: int
    cursor: str | None
    request: Request

    def of(self, keyset: Keyset, **filters: Any) -> Page:
        """The page of this listing the request asks for; a bad cursor is a 422. ``filters``: the
        listing's filters (project, state...), which a cursor is bound to."""
        condition: str = "true"
        params: list[Any] = []
        if self.cursor is not None:
            condition, params = keyset.after(decode_cursor(keyset, filters, self.cursor))
        return Page(keyset, filters, self.limit, condition, params, self.request)


CURSOR_PARAMETER = Query(
    min_length=1,
    max_length=MAX_CURSOR,
    description='Opaque: the position given by the previous page\'s `Link: <...>; rel="next"`.',
)


def page_parameters(default: int = DEFAULT_LIMIT, most: int = MAX_LIMIT) -> Callable[..., PageRequest]:
    """A dependency reading ``limit`` (``1..most``, default ``default``) and ``cursor``."""

    def parameters(request: Request, limit: int = default, cursor: str | None = None) -> PageRequest:
        return PageRequest(limit=limit, cursor=cursor, request=request)

    # evaluated annotations: the bounds are this call's (a string annotation could not see ``most``)
    parameters.__annotations__ = {
        "request": Request,
        "limit": Annotated[
            int, Query(ge=1, le=most, description=f"Rows per page, 1 to {most}; more follow by `Link`.")
        ],
        "cursor": Annotated[str | None, CURSOR_PARAMETER],
        "return": PageRequest,
    }
    return parameters


PageDep = Annotated[PageRequest, Depends(page_parameters())]
