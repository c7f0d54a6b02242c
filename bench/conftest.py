"""Shared timing for the benchmark suites: `measure` runs one case under pytest-benchmark and
records in `extra_info` the backend, achieved GB/s, the machine, and the speed-up over a baseline
backend timed in the same run (same group). With --benchmark-disable it runs the case once."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

import pytest
import torch

# Median seconds per (group, backend) measured in this run, so a later case can divide by it.
_MEDIANS: dict[tuple[str, str], float] = {}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _median_of(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


@pytest.fixture
def measure(benchmark):
    """measure(group, backend, fn, bytes_moved, baseline=None, baseline_fn=None, slow=False).

    `slow` cases (the PyTorch references at 4M elements take seconds) run 2 rounds without
    warm-up instead of pytest-benchmark's calibration. The speed-up over `baseline` uses that
    backend's median from this run, or times `baseline_fn` here when it did not run.
    """

    def run(group, backend, fn, bytes_moved, baseline=None, baseline_fn=None, slow=False):
        benchmark.group = group
        if not benchmark.enabled:
            benchmark(fn)  # runs it once, untimed
            return
        if slow:
            benchmark.pedantic(fn, rounds=2, iterations=1, warmup_rounds=0)
        else:
            benchmark(fn)
        median = benchmark.stats.stats.median
        _MEDIANS[(group, backend)] = median
        info = benchmark.extra_info
        info["backend"] = backend
        info["GB_per_s"] = round(bytes_moved / median / 1e9, 3)
        info["device"] = f"{_cpu_name()}, {torch.get_num_threads()} threads"
        info["torch"] = torch.__version__
        if baseline is not None:
            base = _MEDIANS.get((group, baseline))
            if base is None:
                base = _median_of(baseline_fn, rounds=2)
            info[f"speedup_vs_{baseline}"] = round(base / median, 2)

    return run
