"""``meshhook-metrics serve``: the HTTP service on uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from meshhook_rt_metrics import logs
from meshhook_rt_metrics.api.app import create_app
from meshhook_rt_metrics.api.settings import ApiSettings


def serve(settings: ApiSettings) -> None:
    logs.configure(logging.INFO)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level="info",
        proxy_headers=False,
        server_header=False,
        limit_concurrency=200,
        timeout_graceful_shutdown=10,
    )
    logs.redact_handlers()  # uvicorn.Config installed its own handlers
    uvicorn.Server(config).run()
