"""Benchmarks (not tests): served throughput against the raw encoder, latency at low load."""
