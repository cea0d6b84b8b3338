"""Benchmarks: `make bench` prints throughput and peak memory of the heavy steps."""
