"""`make gpu-check`: build, test, sanitize and benchmark every kernel on the local GPU in one command.

Phases, each with its own time budget (a subprocess timeout, clipped to what is left of TOTAL_BUDGET_S); a
failing phase does not stop the later ones, and the exit code is 1 when any phase did not pass:
  build      `python setup.py build_ext --inplace` with FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST from the device's
             compute capability and CUDA_HOME from nvcc's location (no network, no build isolation)
  tests      pytest on the GPU subset (GPU_TESTS: every CUDA and Triton backend test against the oracles, the
             CUDA-graph capture/replay and host-sync tests, the 2^31-element test), its test ids listed first
  sanitizer  `compute-sanitizer --tool memcheck` on one small run of each CUDA op (skipped without the tool)
  bench      per-step time and fraction of the measured copy bandwidth of the fused step, every backend against
             the eager reference and torch.compile of it, without noise (euler) and with (em), fp32 and bf16;
             the em step with Brownian noise against its counter-noise time;
             the 20-step SRK loop eager and as one replayed CUDA graph (median of triton.testing.do_bench)
Results: bench/results/<gpu-name>-<date>.json and a one-screen summary <gpu-name>-<date>.md.

`--dry-run` (CI, no GPU): the GPU test selection collected (non-empty, naming the required GPU tests), the build
command printed, the sanitizer snippets run on CPU, and the benchmark harness run on CPU at tiny sizes (reference
and cpu backends), results written to a temporary folder.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
TOTAL_BUDGET_S = 470.0  # the whole run stays under 8 minutes
SCHEMA_VERSION = 1
# pytest -k expression of the GPU subset; every test named in REQUIRED_GPU_TESTS must be in it.
GPU_TESTS = "cuda or triton or host_sync or 2_31"
REQUIRED_GPU_TESTS = (
    "test_fixed_nfe_loop_replays_as_one_cuda_graph",
    "test_loop_makes_no_host_sync_inside_steps",
    "test_tensors_over_2_31_elements",
)
GPU_TEST_WORDS = ("cuda", "triton", "host_sync", "2_31")
PHASE_STATUSES = ("passed", "failed", "timeout", "skipped")

# One small run of each CUDA op; DEVICE and BACKEND are set in front by `sanitizer_snippet`.
SNIPPETS = {
    "solver_step": """
from fastdiff.ops.philox import CounterNoise
from fastdiff.ops.solver_step import NoiseDraw, solver_step
x, d, p = (torch.randn(2, 4, 8, 8, device=DEVICE) for _ in range(3))
source = CounterNoise.from_keys(seeds_to_keys([1, 2], torch.device(DEVICE)), backend=BACKEND)
noise = [(0.15, NoiseDraw(source, 3, 0, None, None)), (0.25, NoiseDraw(source, 3, 1, None, None))]
out = solver_step(x, [d, p], 0.875, [0.6, -0.2], noise=noise, backend=BACKEND)
""",
    "philox_normal": """
from fastdiff.ops.philox import philox_normal
out = philox_normal(seeds_to_keys([1, 2], torch.device(DEVICE)), 1000, 3, 1, 0, torch.float32, backend=BACKEND)
""",
    "ito_step": """
from fastdiff.ops.ito_step import ito_step
from fastdiff.ops.philox import CounterNoise
from fastdiff.ops.solver_step import NoiseDraw
x = torch.randn(2, 500, device=DEVICE)
denoised = [x + torch.randn(2, 500, device=DEVICE) for _ in range(2)]
draw = NoiseDraw(CounterNoise([0, 1], torch.device(DEVICE)), 0, 0, 1.0, 0.9)
out = ito_step(x, denoised, 1.0, 0.9, torch.zeros(2, 2, device=DEVICE), draw, "and", backend=BACKEND)[0]
""",
    "trace_step": """
from fastdiff.ops.trace_step import trace_step
x, *ks = (torch.randn(2, 4, 8, 8, device=DEVICE) for _ in range(4))
u = torch.randn(4, 2, 4, 8, 8, device=DEVICE)
total = torch.zeros(2, dtype=torch.float64, device=DEVICE)
keys = seeds_to_keys([1, 2], torch.device(DEVICE))
out = trace_step(x, ks, 1.01, [-0.005, 0.006, -0.006], u, keys, 5, 1, "gaussian", total, 0.3, -0.006, backend=BACKEND)[0]
""",
}


def sanitizer_snippet(op: str, device: str, backend: str) -> str:
    """Python source of one small run of `op` on `device` with `backend`, ending in a device sync and a finiteness check."""
    if op not in SNIPPETS:
        raise ValueError(f"sanitizer_snippet: op must be one of {sorted(SNIPPETS)}, got {op!r}")
    head = f"import torch\nfrom fastdiff.noise import seeds_to_keys\nDEVICE, BACKEND = {device!r}, {backend!r}\n"
    tail = "if DEVICE == 'cuda':\n    torch.cuda.synchronize()\nassert torch.isfinite(out).all(), 'non-finite output'\n"
    return head + SNIPPETS[op].lstrip("\n") + tail


def cuda_arch_list(capability: tuple[int, int]) -> str:
    """TORCH_CUDA_ARCH_LIST for a compute capability (major, minor): (9, 0) -> "9.0"."""
    if len(capability) != 2 or not all(isinstance(v, int) and v >= 0 for v in capability):
        raise ValueError(f"cuda_arch_list: capability must be (major, minor) non-negative ints, got {capability!r}")
    return f"{capability[0]}.{capability[1]}"


def build_command() -> list[str]:
    """The extension build: in place, against the installed torch (setup.py; no build isolation, no network)."""
    return [sys.executable, "setup.py", "build_ext", "--inplace"]


def build_env(capability: tuple[int, int], nvcc: str | None) -> dict[str, str]:
    """Environment of the CUDA build: FORCE_CUDA=1, the arch of `capability`, CUDA_HOME above nvcc's bin/."""
    if nvcc is None:
        raise FileNotFoundError("build: nvcc not found on PATH nor in /usr/local/cuda/bin: cannot build the CUDA kernels")
    return {"FORCE_CUDA": "1", "TORCH_CUDA_ARCH_LIST": cuda_arch_list(capability),
            "CUDA_HOME": str(Path(nvcc).resolve().parent.parent), "MAX_JOBS": str(os.cpu_count() or 1)}


def find_nvcc() -> str | None:
    return shutil.which("nvcc") or shutil.which("nvcc", path="/usr/local/cuda/bin")


class PhaseTimeout(Exception):
    """A phase's command ran past its time budget."""


@dataclass
class PhaseResult:
    ok: bool
    detail: str
    data: dict = field(default_factory=dict)
    skipped: bool = False


@dataclass
class Phase:
    name: str
    budget_s: float
    run: Callable[[float], PhaseResult]  # called with the seconds it may take


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment with the checkout first on PYTHONPATH (the in-place build is the one imported)."""
    env = dict(os.environ, **(extra or {}))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_command(cmd: list[str], timeout_s: float, env: dict[str, str] | None = None, capture: bool = False) -> tuple[int, str]:
    """(exit code, captured stdout+stderr or "") of `cmd` run in the checkout; its output streams to ours unless
    `capture`. Past `timeout_s` its whole process group is killed and PhaseTimeout raised."""
    print(f"$ {' '.join(cmd)}  (budget {timeout_s:.0f} s)", flush=True)
    pipe = subprocess.PIPE if capture else None
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env or subprocess_env(), stdout=pipe,
                            stderr=subprocess.STDOUT if capture else None, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=max(timeout_s, 0.0))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise PhaseTimeout(f"{cmd[0]} ran past its {timeout_s:.0f} s budget") from None
    return proc.returncode, out or ""


def run_phases(phases: list[Phase], total_budget_s: float = TOTAL_BUDGET_S) -> list[dict]:
    """Every phase in order, each given min(its budget, what is left of `total_budget_s`); one failing, timing out or
    raising does not stop the later ones. Returns one record per phase."""
    start = time.monotonic()
    records = []
    for phase in phases:
        budget = min(phase.budget_s, total_budget_s - (time.monotonic() - start))
        print(f"\n== {phase.name} (budget {max(budget, 0):.0f} s)", flush=True)
        began = time.monotonic()
        if budget < 1:
            status, detail, data = "skipped", f"no time left of the {total_budget_s:.0f} s budget", {}
        else:
            try:
                result = phase.run(budget)
                status = "skipped" if result.skipped else "passed" if result.ok else "failed"
                detail, data = result.detail, result.data
            except PhaseTimeout as error:
                status, detail, data = "timeout", str(error), {}
            except Exception as error:  # a phase's own bug must not stop the later phases either
                status, detail, data = "failed", f"{type(error).__name__}: {error}", {}
        seconds = round(time.monotonic() - began, 2)
        print(f"== {phase.name}: {status} in {seconds} s: {detail}", flush=True)
        records.append({"name": phase.name, "status": status, "seconds": seconds, "budget_s": round(budget, 1),
                        "detail": detail, "data": data})
    return records


def failed_phases(records: list[dict], allowed_skips: tuple[str, ...] = ()) -> list[str]:
    """Names of the phases that did not pass (a skip counts unless the phase is in `allowed_skips`)."""
    allowed = [r for r in records if r["status"] == "skipped" and r["name"] in allowed_skips]
    return [r["name"] for r in records if r["status"] != "passed" and r not in allowed]


# -- tests ---------------------------------------------------------------------------------------------------------

def pytest_args() -> list[str]:
    """Options every pytest run of the subset takes (--benchmark-disable only where pytest-benchmark is installed)."""
    args = ["-p", "no:cacheprovider", "-k", GPU_TESTS]
    return args + (["--benchmark-disable"] if importlib.util.find_spec("pytest_benchmark") else [])


def collect_gpu_tests(paths: list[str], timeout_s: float) -> list[str]:
    """Ids of the GPU subset among the tests in `paths` (pytest --collect-only)."""
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "--continue-on-collection-errors", *pytest_args(), *paths]
    code, out = run_command(cmd, timeout_s, capture=True)
    ids = [line for line in out.splitlines() if "::" in line and not line.startswith(("ERROR", "FAILED"))]
    if code not in (0, 1) or not ids:  # 1: collection errors elsewhere, reported by the run
        raise RuntimeError(f"collecting the GPU tests gave exit code {code} and {len(ids)} ids:\n{out[-2000:]}")
    return ids


def check_selection(ids: list[str], required: tuple[str, ...] = REQUIRED_GPU_TESTS) -> None:
    """The selection is non-empty, made of CUDA/Triton tests, and holds every required GPU test."""
    if not ids:
        raise ValueError(f"GPU test selection {GPU_TESTS!r} is empty: expected the CUDA and Triton backend tests")
    stray = [i for i in ids if not any(word in i.lower() for word in GPU_TEST_WORDS)]
    if stray:
        raise ValueError(f"GPU test selection holds {len(stray)} tests naming neither {GPU_TEST_WORDS}, e.g. {stray[:3]}")
    missing = [name for name in required if not any(f"::{name}" in i for i in ids)]
    if missing:
        raise ValueError(f"GPU test selection {GPU_TESTS!r} misses {missing}: expected every test in REQUIRED_GPU_TESTS")


def junit_counts(path: Path) -> dict[str, int]:
    """Test counts of a pytest --junitxml report."""
    import xml.etree.ElementTree as ElementTree

    suite = ElementTree.parse(path).getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


def tests_phase(dry_run: bool, work: Path) -> Callable[[float], PhaseResult]:
    def run(budget_s: float) -> PhaseResult:
        began = time.monotonic()
        ids = collect_gpu_tests(["tests"], budget_s)
        (work / "gpu_tests.txt").write_text("\n".join(ids) + "\n")
        print(f"{len(ids)} GPU tests selected by -k {GPU_TESTS!r} (all in {work / 'gpu_tests.txt'}):", *ids[:40], sep="\n  ")
        check_selection(ids)
        if dry_run:
            return PhaseResult(True, f"{len(ids)} GPU tests collected (dry run: not run)", {"selected": len(ids)})
        report = work / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-rfEs", "--continue-on-collection-errors", f"--junitxml={report}",
               *pytest_args(), "tests"]
        code, _ = run_command(cmd, budget_s - (time.monotonic() - began))
        counts = dict(junit_counts(report), selected=len(ids)) if report.exists() else {"selected": len(ids)}
        return PhaseResult(code == 0, f"pytest exit code {code}: {counts}", counts)

    return run


# -- build and sanitizer ---------------------------------------------------------------------------------------------

def build_phase(dry_run: bool) -> Callable[[float], PhaseResult]:
    def run(budget_s: float) -> PhaseResult:
        if dry_run:
            env = build_env((9, 0), find_nvcc() or "/usr/local/cuda/bin/nvcc")
            shown = " ".join(f"{k}={v}" for k, v in env.items())
            print(f"would run: {shown} {' '.join(build_command())}")
            return PhaseResult(True, "dry run: build command printed (arch of an sm_90 device shown)")
        import torch

        env = build_env(torch.cuda.get_device_capability(), find_nvcc())
        code, _ = run_command(build_command(), budget_s, env=subprocess_env(env))
        return PhaseResult(code == 0, f"exit code {code}, TORCH_CUDA_ARCH_LIST={env['TORCH_CUDA_ARCH_LIST']}")

    return run


def sanitizer_phase(dry_run: bool) -> Callable[[float], PhaseResult]:
    def run(budget_s: float) -> PhaseResult:
        if dry_run:  # the snippets themselves, on CPU with the cpu backend
            for op in SNIPPETS:
                exec(compile(sanitizer_snippet(op, "cpu", "cpu"), f"<sanitizer {op}>", "exec"), {})
            return PhaseResult(True, f"dry run: {len(SNIPPETS)} snippets ran on CPU ({', '.join(SNIPPETS)})")
        tool = shutil.which("compute-sanitizer") or shutil.which("compute-sanitizer", path="/usr/local/cuda/bin")
        if tool is None:
            return PhaseResult(False, "compute-sanitizer not on PATH", skipped=True)
        began, codes = time.monotonic(), {}
        for n, op in enumerate(SNIPPETS):
            left = (budget_s - (time.monotonic() - began)) / (len(SNIPPETS) - n)
            cmd = [tool, "--tool", "memcheck", "--error-exitcode", "1", "--print-limit", "20",
                   sys.executable, "-c", sanitizer_snippet(op, "cuda", "cuda")]
            try:
                codes[op] = run_command(cmd, left)[0]
            except PhaseTimeout:
                codes[op] = "timeout"
        bad = {op: code for op, code in codes.items() if code != 0}
        return PhaseResult(not bad, f"memcheck clean on {sorted(set(codes) - set(bad))}, failing {bad}" if bad else
                           f"memcheck clean on {', '.join(codes)}", {"exit_codes": codes})

    return run


# -- benchmarks (run as `gpu_check.py bench`, a subprocess of the bench phase) -----------------------------------------

def bench_phase(dry_run: bool, work: Path) -> Callable[[float], PhaseResult]:
    def run(budget_s: float) -> PhaseResult:
        out = work / "bench.json"
        cmd = [sys.executable, str(BENCH / "gpu_check.py"), "bench", "--out", str(out)] + (["--tiny"] if dry_run else [])
        try:
            code, _ = run_command(cmd, budget_s)
        finally:  # the cases finished before a timeout are kept
            data = json.loads(out.read_text()) if out.exists() else {"benchmarks": []}
        cases = data["benchmarks"]
        return PhaseResult(code == 0 and bool(cases), f"exit code {code}, {len(cases)} cases", data)

    return run


def run_benchmarks(out: Path, tiny: bool) -> None:
    """Time the sampling loop, then the fused step on every backend but torch.compile, then torch.compile of the
    reference (slowest to set up, so a timeout loses those first); `out` is rewritten after every case."""
    sys.path.insert(0, str(BENCH))
    import bench_fused_step as fused
    import bench_loop as loop
    import torch
    from fused_backends import fused_backends

    spec = importlib.util.spec_from_file_location("bench_timing", BENCH / "conftest.py")
    timing = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(timing)
    from fastdiff.noise import seeds_to_keys
    from fastdiff.ops.brownian import BrownianNoise
    from fastdiff.ops.philox import CounterNoise
    from fastdiff.ops.solver_step import NoiseDraw, solver_step
    from fastdiff.reference import solver_step as reference

    device = "cpu" if tiny else "cuda"
    copy = timing.copy_bandwidth(device)
    results = {"device": device, "copy_GB_per_s": round(copy / 1e9, 3), "benchmarks": []}

    def record(case: dict) -> None:
        print(f"  {case}", flush=True)
        results["benchmarks"].append(case)
        out.write_text(json.dumps(results, indent=1))

    for size, shape in ({"1x4x8x8": (1, 4, 8, 8)} if tiny else loop.SHAPES["cuda"]).items():
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device) * loop.GRID[0]
        case = {"kind": "loop", "steps": len(loop.GRID) - 1, "shape": size, "dtype": "float32"}
        eager = timing.median_seconds(functools.partial(loop.fastdiff.sample, loop.denoiser, x, loop.GRID, "srk", seed=0), device)
        record(dict(case, backend="eager", median_ms=round(eager * 1e3, 4)))
        if device == "cuda":
            graph, _ = loop._capture(x, torch.arange(shape[0], dtype=torch.int64, device=device))
            replay = timing.median_seconds(graph.replay, device)
            record(dict(case, backend="cuda_graph", median_ms=round(replay * 1e3, 4), speedup_vs_eager=round(eager / replay, 2)))

    shapes = {"1x4x8x8": (1, 4, 8, 8), "2x4x16x16": (2, 4, 16, 16)} if tiny else fused.GPU_SHAPES
    eager_backends = [("reference", None), *fused_backends(device)]
    passes = [eager_backends] if tiny else [eager_backends, [("compiled_reference", None)]]
    medians: dict[tuple, float] = {}
    for backends in passes:
        for step in ("euler", "em"):  # without noise, with one counter draw
            bs, cs = fused.STEPS[step]
            for size, shape in shapes.items():
                for dtype in (torch.float32, torch.bfloat16):
                    g = torch.Generator().manual_seed(0)
                    x, *ks = (torch.randn(shape, generator=g).to(device, dtype) for _ in range(len(bs) + 1))
                    keys = seeds_to_keys([11 + b for b in range(shape[0])], torch.device(device))
                    source = CounterNoise.from_keys(keys)
                    noise = [(c, NoiseDraw(source, fused.STEP_INDEX, stage, None, None)) for stage, c in enumerate(cs)]
                    draws = [(fused.STEP_INDEX, stage, source.stream) for stage in range(len(cs))]
                    bytes_moved = x.numel() * x.element_size() * (len(ks) + 2)
                    dtype_name = str(dtype).removeprefix("torch.")
                    for backend, reason in backends:
                        case = {"kind": "step", "step": step, "noise": "counter" if cs else "none", "shape": size,
                                "dtype": dtype_name, "backend": backend}
                        if reason is not None:
                            record(dict(case, skipped=reason))
                            continue
                        if backend == "compiled_reference":
                            torch._dynamo.reset()  # a fresh compile per case, as bench_fused_step.py
                            run = functools.partial(torch.compile(reference.solver_step, dynamic=False), x, ks, fused.A, bs,
                                                    keys, draws, cs)
                            run()  # compile outside the timing
                        else:
                            run = functools.partial(solver_step, x, ks, fused.A, bs, noise=noise, backend=backend)
                        median = medians[(step, size, dtype_name, backend)] = timing.median_seconds(run, device)
                        case.update(median_ms=round(median * 1e3, 4), GB_per_s=round(bytes_moved / median / 1e9, 3),
                                    fraction_of_copy_bw=round(bytes_moved / median / copy, 3))
                        if backend != "reference":
                            case["speedup_vs_reference"] = round(medians[(step, size, dtype_name, "reference")] / median, 2)
                        record(case)

    # the em step with its one draw as a Brownian increment (noise="brownian": ~2 depth + 3 counter draws in the kernel)
    bs, cs = fused.STEPS["em"]
    for size, shape in shapes.items():
        for dtype in (torch.float32, torch.bfloat16):
            g = torch.Generator().manual_seed(0)
            x, *ks = (torch.randn(shape, generator=g).to(device, dtype) for _ in range(len(bs) + 1))
            source = BrownianNoise(seeds_to_keys([11 + b for b in range(shape[0])], torch.device(device)))
            noise = [(c, NoiseDraw(source, fused.STEP_INDEX, 0, 5.0, 3.0, (5.0, 3.0))) for c in cs]
            dtype_name = str(dtype).removeprefix("torch.")
            for backend, reason in eager_backends:
                case = {"kind": "step", "step": "em", "noise": "brownian", "shape": size, "dtype": dtype_name,
                        "backend": backend}
                if reason is not None:
                    record(dict(case, skipped=reason))
                    continue
                median = timing.median_seconds(functools.partial(solver_step, x, ks, fused.A, bs, noise=noise, backend=backend),
                                               device)
                record(dict(case, median_ms=round(median * 1e3, 4),
                            vs_counter_noise=round(median / medians[("em", size, dtype_name, backend)], 2)))


# -- results -------------------------------------------------------------------------------------------------------

def environment() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    try:
        triton = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        triton = "not installed"
    return {"gpu": torch.cuda.get_device_name() if cuda else "none",
            "capability": cuda_arch_list(torch.cuda.get_device_capability()) if cuda else None,
            "torch": torch.__version__, "cuda": torch.version.cuda, "triton": triton, "python": sys.version.split()[0]}


def results_document(records: list[dict], dry_run: bool, env: dict, date: str) -> dict:
    """The JSON results: the machine, each phase's record, the test counts and the benchmark cases."""
    by_name = {r["name"]: r for r in records}
    return {"schema": SCHEMA_VERSION, "date": date, "dry_run": dry_run, **env,
            "failed_phases": failed_phases(records, allowed_skips=("sanitizer",)),
            "phases": [{k: r[k] for k in ("name", "status", "seconds", "budget_s", "detail")} for r in records],
            "tests": by_name.get("tests", {}).get("data", {}),
            "copy_GB_per_s": by_name.get("bench", {}).get("data", {}).get("copy_GB_per_s"),
            "benchmarks": by_name.get("bench", {}).get("data", {}).get("benchmarks", [])}


def check_schema(doc: dict) -> None:
    """Raise ValueError naming the first key or value of `doc` that breaks the results schema."""
    top = {"schema": int, "date": str, "dry_run": bool, "gpu": str, "torch": str, "failed_phases": list, "phases": list,
           "tests": dict, "benchmarks": list}
    for key, kind in top.items():
        if not isinstance(doc.get(key), kind):
            raise ValueError(f"results: {key!r} must be a {kind.__name__}, got {doc.get(key)!r}")
    for phase in doc["phases"]:
        if set(phase) != {"name", "status", "seconds", "budget_s", "detail"} or phase["status"] not in PHASE_STATUSES:
            raise ValueError(f"results: phase record {phase!r} must have name/status/seconds/budget_s/detail, "
                             f"status one of {PHASE_STATUSES}")
    for case in doc["benchmarks"]:
        if case.get("kind") not in ("step", "loop") or not {"shape", "dtype", "backend"} <= set(case):
            raise ValueError(f"results: benchmark case {case!r} must have kind step/loop, shape, dtype and backend")
        if "skipped" not in case and not (isinstance(case.get("median_ms"), float) and case["median_ms"] > 0):
            raise ValueError(f"results: benchmark case {case!r} must have a positive median_ms or a skip reason")


def markdown_summary(doc: dict) -> str:
    """One screen: the machine, the phases, the test counts, the step medians per backend and the loop."""
    lines = [f"# gpu-check {doc['gpu']} {doc['date']}{' (dry run)' if doc['dry_run'] else ''}", "",
             f"torch {doc['torch']}, CUDA {doc.get('cuda')}, Triton {doc.get('triton')}, capability {doc.get('capability')}, "
             f"copy {doc.get('copy_GB_per_s')} GB/s", "",
             f"**{'FAILED: ' + ', '.join(doc['failed_phases']) if doc['failed_phases'] else 'all phases passed'}**", "",
             "| phase | status | s | detail |", "|---|---|---|---|"]
    lines += [f"| {p['name']} | {p['status']} | {p['seconds']} | {p['detail'][:90]} |" for p in doc["phases"]]
    steps = [c for c in doc["benchmarks"] if c["kind"] == "step"]
    backends = list(dict.fromkeys(c["backend"] for c in steps))
    if steps:
        lines += ["", "step: median ms (fraction of copy bandwidth)", "",
                  "| step | shape | dtype | " + " | ".join(backends) + " |", "|---" * (3 + len(backends)) + "|"]
        rows: dict[tuple, dict] = {}
        for c in steps:
            if "skipped" in c:
                cell = "skip"
            elif c["noise"] == "brownian":
                cell = f"{c['median_ms']:.4g} ({c['vs_counter_noise']:.3g}x counter)"
            else:
                cell = f"{c['median_ms']:.4g} ({c['fraction_of_copy_bw']:.2f})"
            label = c["step"] + (" brownian" if c["noise"] == "brownian" else "")
            rows.setdefault((label, c["shape"], c["dtype"]), {})[c["backend"]] = cell
        lines += [f"| {' | '.join(key)} | {' | '.join(cells.get(b, '') for b in backends)} |" for key, cells in rows.items()]
    loops = [c for c in doc["benchmarks"] if c["kind"] == "loop"]
    if loops:
        lines += ["", "20-step SRK loop: " + "; ".join(f"{c['shape']} {c['backend']} {c['median_ms']:.4g} ms" for c in loops)]
    return "\n".join(lines) + "\n"


def results_stem(gpu: str, date: str) -> str:
    """<gpu-name>-<date>, the name lower-cased with runs of other characters as one dash."""
    return f"{re.sub(r'[^a-z0-9]+', '-', gpu.lower()).strip('-')}-{date}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", nargs="?", default="check", choices=("check", "bench"))
    parser.add_argument("--dry-run", action="store_true", help="CI: no GPU needed, results to a temporary folder")
    parser.add_argument("--out", type=Path, help="bench: where its JSON goes")
    parser.add_argument("--tiny", action="store_true", help="bench: CPU at tiny sizes (reference and cpu backends)")
    args = parser.parse_args(argv)
    if args.what == "bench":
        if args.out is None:
            parser.error("bench needs --out FILE")
        run_benchmarks(args.out, args.tiny)
        return 0
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu-check: no CUDA device visible; `make gpu-check DRY_RUN=1` is the dry run for a machine without one")
        return 2
    work = Path(tempfile.mkdtemp(prefix="fastdiff-gpu-check-"))
    phases = [Phase("build", 160, build_phase(args.dry_run)), Phase("tests", 150, tests_phase(args.dry_run, work)),
              Phase("sanitizer", 80, sanitizer_phase(args.dry_run)), Phase("bench", 80, bench_phase(args.dry_run, work))]
    records = run_phases(phases)
    date = datetime.date.today().isoformat()
    doc = results_document(records, args.dry_run, environment(), date)
    check_schema(doc)
    folder = work if args.dry_run else BENCH / "results"
    stem = results_stem(doc["gpu"], date)
    (folder / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    summary = markdown_summary(doc)
    (folder / f"{stem}.md").write_text(summary)
    print("\n" + summary + f"\nwritten: {folder / stem}.json and .md")
    return 1 if doc["failed_phases"] else 0


if __name__ == "__main__":
    sys.exit(main())
