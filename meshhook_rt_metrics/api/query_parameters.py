"""The app-wide check of query strings against the parameters each route declares.

FastAPI silently ignores a parameter the route does not declare (a typo such as ``stp=1m`` then gives a
different answer) and takes the last of a repeated scalar (``to=0&to=53``). Both are 422 here, for every
route, from the route's own declaration: a list parameter (``match``, ``by``) may repeat, a scalar may not.
"""

from __future__ import annotations

import types
from collections import Counter
from collections.abc import Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from fastapi import Request
from fastapi.dependencies.models import Dependant

from meshhook_rt_metrics.api.errors import ApiError, ErrorDetail

_SEQUENCES = (list, set, frozenset, tuple, Sequence)
MAX_DETAILS = 20


def is_list_annotation(annotation: Any) -> bool:
    """``list[str]``, ``list[str] | None``, ``Annotated[list[...], ...]``: a parameter that may repeat."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return is_list_annotation(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return any(is_list_annotation(arg) for arg in get_args(annotation) if arg is not type(None))
    target = origin or annotation
    return isinstance(target, type) and issubclass(target, _SEQUENCES) and not issubclass(target, str | bytes)


def declared_query_parameters(dependant: Dependant) -> dict[str, bool]:
    """The query parameters a route declares, its dependencies' included: name -> may it repeat."""
    names = {param.alias: is_list_annotation(param.field_info.annotation) for param in dependant.query_params}
    for sub in dependant.dependencies:
        names.update(declared_query_parameters(sub))
    return names


def reject_unknown_query_parameters(request: Request) -> None:
    """422 for query parameters the route does not declare (``unknown query parameter``) and for scalar
    parameters given more than once (``given more than once``), each at ``["query", name]``."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    declared = declared_query_parameters(dependant)
    counts = Counter(key for key, _ in request.query_params.multi_items())
    unknown = sorted(key for key in counts if key not in declared)
    repeated = sorted(key for key, n in counts.items() if n > 1 and key in declared and not declared[key])
    details = [
        ErrorDetail(loc=["query", key], message="unknown query parameter", type="extra_forbidden")
        for key in unknown
    ] + [
        ErrorDetail(loc=["query", key], message="given more than once", type="repeated_parameter")
        for key in repeated
    ]
    if not details:
        return
    problems = []
    if unknown:
        problems.append("unknown query parameter " + ", ".join(unknown[:5]))
    if repeated:
        problems.append("query parameter given more than once: " + ", ".join(repeated[:5]))
    raise ApiError(
        422, "validation_failed", "invalid request: " + "; ".join(problems), details=details[:MAX_DETAILS]
    )
