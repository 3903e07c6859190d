"""Request size limits, before any route runs: 413 for large bodies, 414 for long query strings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from meshhook_rt_metrics.api.errors import ApiError


class LimitsMiddleware:
    """413 for bodies over ``max_body`` bytes (declared or streamed), 414 for long query strings."""

    def __init__(self, app: Any, max_body: int, max_query: int) -> None:
        self.app = app
        self.max_body = max_body
        self.max_query = max_query

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem: ApiError | None = None
        if len(scope.get("query_string", b"")) > self.max_query:
            problem = ApiError(414, "uri_too_long", f"query string longer than {self.max_query} bytes")
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > self.max_body:
                        problem = ApiError(
                            413, "payload_too_large", f"body larger than {self.max_body} bytes"
                        )
                except ValueError:
                    problem = ApiError(400, "invalid_request", "invalid Content-Length")
        if problem is not None:
            await problem.response()(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> MutableMapping[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise ApiError(413, "payload_too_large", f"body larger than {self.max_body} bytes")
            return message

        await self.app(scope, limited_receive, send)
