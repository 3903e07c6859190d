"""MeshHook real-time metrics: instrument Python workers, aggregate in Postgres, watch live."""

__version__ = "0.1.0"
