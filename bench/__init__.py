"""Benchmarks: speed and memory goals, each measured against its baseline in one run."""
