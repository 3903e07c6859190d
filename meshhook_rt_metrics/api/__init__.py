"""MeshHook real-time metrics."""
