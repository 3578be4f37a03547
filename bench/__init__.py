"""Benchmarks: speed and memory goals, each measured against its baseline in one run."""
import time


def timed(fn) -> float:
    """Seconds one call of `fn` takes (perf_counter)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
