"""The benchmark scripts and what they measure with (``benchmarks.metrics``), importable by the tests."""
