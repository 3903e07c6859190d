"""The gateway's ASGI application and its runner."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from meshhook_rt_metrics.localstack.gateway.auth_api import AuthApi
from meshhook_rt_metrics.localstack.gateway.config import GatewayConfig
from meshhook_rt_metrics.localstack.gateway.functions import FunctionsHost
from meshhook_rt_metrics.localstack.gateway.realtime.service import RealtimeService
from meshhook_rt_metrics.localstack.gateway.rest import DataApi, error

log = logging.getLogger(__name__)

ALLOWED_HEADERS = [
    "authorization",
    "apikey",
    "content-type",
    "x-client-info",
    "accept-profile",
    "content-profile",
    "prefer",
    "x-supabase-api-version",
    "range",
]


class Gateway:
    """The services behind one listening port."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.rest = DataApi(config)
        self.realtime = RealtimeService(config)
        self.functions = FunctionsHost(config)
        self.auth = AuthApi(config)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        await self.rest.open()
        await self.auth.open()
        await self.realtime.start()
        if not await self.realtime.wait_ready(30.0):
            log.warning("the Realtime database feed is not ready yet; it keeps retrying")
        log.info("gateway listening on %s", self.config.public_url)
        try:
            yield
        finally:
            await self.functions.close()
            await self.realtime.stop()
            await self.rest.close()
            await self.auth.close()

    async def health(self, _request: Request) -> Response:
        """200 only while Broadcast from Database works; 503 while the feed starts or restarts."""
        ok = self.realtime.feed_running()
        feed = self.realtime.feed.status.as_dict()
        if not ok and feed["state"] == "running":
            feed["state"] = "stopped"  # the task ended (it should never): not running, whatever it said
        stats = self.realtime.hub.stats
        return JSONResponse(
            {
                "status": "ok" if ok else ("starting" if feed["state"] == "starting" else "unavailable"),
                "feed": feed,
                "realtime": {
                    "connections": self.realtime.connections,
                    "subscriptions": self.realtime.hub.subscriber_count(),
                    "database_messages": stats.database_messages,
                    "delivered": stats.delivered,
                    "rate_limited": stats.rate_limited,
                    "unencodable": stats.unencodable,
                },
            },
            status_code=200 if ok else 503,
        )

    async def rest_other(self, request: Request) -> Response:
        return error(
            404,
            "PGRST205",
            f"Could not find the table '{request.path_params['path']}' in the schema cache",
            hint="The MeshHook local stack serves the Data API for functions only: POST /rest/v1/rpc/<function>",
        )

    def app(self) -> Starlette:
        routes = [
            Route("/health", self.health, methods=["GET"]),
            Route("/rest/v1/rpc/{name}", self.rest.rpc, methods=["GET", "POST"]),
            Route("/rest/v1/{path:path}", self.rest_other, methods=["GET", "POST", "PATCH", "DELETE", "PUT"]),
            Route("/auth/v1/token", self.auth.token, methods=["POST"]),
            Route("/auth/v1/user", self.auth.user, methods=["GET"]),
            Route("/auth/v1/logout", self.auth.logout, methods=["POST"]),
            Route("/auth/v1/{path:path}", self.auth.not_found, methods=["GET", "POST", "PUT", "DELETE"]),
            WebSocketRoute("/realtime/v1/websocket", self.realtime.websocket),
            Route("/realtime/v1/api/broadcast", self.realtime.broadcast, methods=["POST"]),
            Route(
                "/functions/v1/{name}",
                self.functions.handle,
                methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            ),
            Route(
                "/functions/v1/{name}/{rest:path}",
                self.functions.handle,
                methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            ),
        ]
        middleware = [
            Middleware(
                CORSMiddleware,
                allow_origins=["*"],
                allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
                allow_headers=ALLOWED_HEADERS,
                expose_headers=["content-range", "content-profile", "x-supabase-api-version"],
            )
        ]
        return Starlette(routes=routes, middleware=middleware, lifespan=self.lifespan)


_SECRETS = re.compile(r"(?i)((?:apikey|access_token|token)=)[^&\s\"']+|eyJ[\w-]+\.[\w-]+\.[\w-]+")


class RedactSecrets(logging.Filter):
    """Keeps API keys and JWTs out of the logs (uvicorn logs WebSocket URLs, which carry the apikey)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = _SECRETS.sub(lambda m: (m.group(1) or "") + "<redacted>", message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def build_server(config: GatewayConfig, log_level: str = "info") -> uvicorn.Server:
    """A uvicorn server for the gateway; access logs stay off because URLs carry API keys."""
    gateway = Gateway(config)
    server_config = uvicorn.Config(
        gateway.app(),
        host=config.host,
        port=config.port,
        ws="websockets-sansio",
        ws_max_size=config.max_frame_bytes,
        ws_ping_interval=None,
        access_log=False,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=3,
    )
    redact = RedactSecrets()
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "meshhook_rt_metrics"):
        logging.getLogger(name).addFilter(redact)
    return uvicorn.Server(server_config)


def serve(config: GatewayConfig, log_level: str = "info") -> None:
    asyncio.run(build_server(config, log_level).serve())
