"""MeshHook real-time metrics: instrument Python workers, aggregate in Postgres, watch live."""

__version__ = "0.1.0"

from meshhook_rt_metrics.client import MetricsClient

__all__ = ["MetricsClient", "__version__"]
