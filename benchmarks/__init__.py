"""Benchmarks: run each as ``python -m benchmarks.<name>``; JSON results go to benchmarks/results/."""
