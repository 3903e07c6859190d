"""HTTP service: metric queries, series discovery, scrape tokens, Prometheus exposition, health."""

from meshhook_rt_metrics.api.app import create_app
from meshhook_rt_metrics.api.settings import ApiSettings

__all__ = ["ApiSettings", "create_app"]
