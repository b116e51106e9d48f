"""Benchmarks (not tests): ``python -m bench [--quick]`` prints tables and writes docs/benchmarks.{md,json}."""
