"""Shared timing for the benchmark suites: `measure` runs one case under pytest-benchmark and
records in `extra_info` the backend, the median time, achieved GB/s and its fraction of the
measured copy bandwidth of the device, the machine and versions, and the speed-up over baseline
backends timed in the same run (same group). With --benchmark-disable it runs the case once.

CPU cases are timed by pytest-benchmark (host clock). CUDA cases are timed with
`triton.testing.do_bench` (median of device-synchronised runs, L2 flushed between them); the
pytest-benchmark table then shows synchronised host times, and extra_info["median_ms"] is the
figure that GB/s and speed-ups use.

Benchmark runs use every core (FASTDIFF_BENCH_THREADS overrides), never the single intra-op
thread that tests/conftest.py sets for the test suite; smoke runs leave the thread count alone.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from collections.abc import Callable, Mapping

import pytest
import torch

# Median seconds per (group, backend) measured in this run, so a later case can divide by it.
_MEDIANS: dict[tuple[str, str], float] = {}
# Measured copy bandwidth (bytes/s) per device type, once per session.
_COPY_BANDWIDTH: dict[str, float] = {}
BENCH_THREADS = int(os.environ.get("FASTDIFF_BENCH_THREADS", os.cpu_count() or 1))


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _triton_version() -> str:
    try:
        return importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _median_of(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def median_seconds(fn: Callable[[], object], device: torch.device | str = "cpu", rounds: int = 5) -> float:
    """Median seconds of `fn`: do_bench on CUDA, else the host clock after one warm-up call."""
    if torch.device(device).type == "cuda":
        from triton.testing import do_bench

        return do_bench(fn, return_mode="median") / 1e3
    fn()
    return _median_of(fn, rounds)


def copy_bandwidth(device: torch.device | str) -> float:
    """Bytes/s of a device-to-device `copy_` of a 256M-element float32 buffer on GPU (1 GiB, far
    beyond L2), 64M elements on CPU; read plus write counted, as for the steps."""
    kind = torch.device(device).type
    if kind not in _COPY_BANDWIDTH:
        numel = (1 << 28) if kind == "cuda" else (1 << 26)
        src = torch.ones(numel, device=device)
        dst = torch.empty_like(src)
        _COPY_BANDWIDTH[kind] = 2 * src.nbytes / median_seconds(lambda: dst.copy_(src), device)
        del src, dst
    return _COPY_BANDWIDTH[kind]


def _machine(device: torch.device) -> str:
    cpu = f"{_cpu_name()}, {torch.get_num_threads()} threads"
    return f"{torch.cuda.get_device_name(device)} (host {cpu})" if device.type == "cuda" else cpu


@pytest.fixture(autouse=True)
def bench_threads(request):
    """Benchmark runs use BENCH_THREADS intra-op threads (restored afterwards)."""
    if request.config.getoption("benchmark_disable", False):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(BENCH_THREADS)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def time_median():
    """median_seconds(fn, device="cpu", rounds=5): a plain timing outside pytest-benchmark."""
    return median_seconds


@pytest.fixture
def measure(benchmark):
    """measure(group, backend, fn, bytes_moved, baseline=None, baseline_fn=None, slow=False, device="cpu").

    `baseline` names one backend or several; the speed-up over each uses that backend's median
    from this run, or times `baseline_fn` (a callable, or {name: callable}) here when it did not
    run. `slow` CPU cases (the PyTorch references at millions of elements take seconds) run 2
    rounds without warm-up instead of pytest-benchmark's calibration. `bytes_moved=None` skips
    the bandwidth figures. Returns the median seconds (None with --benchmark-disable).
    """

    def run(group, backend, fn, bytes_moved, baseline=None, baseline_fn=None, slow=False, device="cpu"):
        device = torch.device(device)
        benchmark.group = group
        if not benchmark.enabled:
            benchmark(fn)  # runs it once, untimed
            return None
        if device.type == "cuda":
            median = median_seconds(fn, device)

            def synced():
                fn()
                torch.cuda.synchronize(device)

            benchmark.pedantic(synced, rounds=10, iterations=1, warmup_rounds=1)
        else:
            if slow:
                benchmark.pedantic(fn, rounds=2, iterations=1, warmup_rounds=0)
            else:
                benchmark(fn)
            median = benchmark.stats.stats.median
        _MEDIANS[(group, backend)] = median
        info = benchmark.extra_info
        info["backend"] = backend
        info["median_ms"] = round(median * 1e3, 4)
        info["timer"] = "triton.testing.do_bench median" if device.type == "cuda" else "pytest-benchmark median (host clock)"
        if bytes_moved is not None:
            copy = copy_bandwidth(device)
            info["GB_per_s"] = round(bytes_moved / median / 1e9, 3)
            info["copy_GB_per_s"] = round(copy / 1e9, 3)
            info["fraction_of_copy_bw"] = round(bytes_moved / median / copy, 3)
        info["device"] = _machine(device)
        info["torch"] = torch.__version__
        info["triton"] = _triton_version()
        names = [baseline] if isinstance(baseline, str) else list(baseline or ())
        fns = baseline_fn if isinstance(baseline_fn, Mapping) else {name: baseline_fn for name in names}
        for name in names:
            base = _MEDIANS.get((group, name))
            if base is None and fns.get(name) is not None:
                base = median_seconds(fns[name], device, rounds=2)
            if base is not None:
                info[f"speedup_vs_{name}"] = round(base / median, 2)
        return median

    return run

