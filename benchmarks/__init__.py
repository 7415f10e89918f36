"""The benchmark harness (``python benchmarks/bench.py``); it imports ncjax, never the reverse."""
