"""bench/gpu_check.py, the `make gpu-check` harness, checked without a GPU: the GPU test selection, the build
settings, the phase runner (a failing phase does not stop the later ones; budgets are enforced), the sanitizer
snippets, and the results schema of a tiny CPU benchmark run."""

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
gpu_check = sys.modules["gpu_check"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)


def test_gpu_selection_is_made_of_cuda_and_triton_tests():
    ids = gpu_check.collect_gpu_tests(["tests/test_compile.py", "tests/test_solver_step.py"], timeout_s=60)
    gpu_check.check_selection(ids)
    assert any("[triton-" in i for i in ids) and any("cuda-cuda" in i for i in ids)
    assert not any("test_sampling_loop_compiles_to_one_graph" in i for i in ids)


def test_check_selection_rejects_empty_stray_and_incomplete_selections():
    with pytest.raises(ValueError, match="is empty"):
        gpu_check.check_selection([])
    with pytest.raises(ValueError, match="naming neither"):
        gpu_check.check_selection(["tests/test_api.py::test_sample_runs"])
    with pytest.raises(ValueError, match="misses"):
        gpu_check.check_selection(["tests/test_x.py::test_y[cuda-cuda]"])


@pytest.mark.parametrize(("capability", "arch"), [((9, 0), "9.0"), ((8, 6), "8.6"), ((12, 0), "12.0")])
def test_arch_list_from_capability(capability, arch):
    assert gpu_check.cuda_arch_list(capability) == arch
    env = gpu_check.build_env(capability, "/opt/cuda-13/bin/nvcc")
    assert env["TORCH_CUDA_ARCH_LIST"] == arch and env["FORCE_CUDA"] == "1" and env["CUDA_HOME"] == "/opt/cuda-13"


def test_arch_list_and_build_reject_bad_input():
    with pytest.raises(ValueError, match="capability"):
        gpu_check.cuda_arch_list((9,))
    with pytest.raises(FileNotFoundError, match="nvcc"):
        gpu_check.build_env((9, 0), None)
    assert gpu_check.build_command()[1:] == ["setup.py", "build_ext", "--inplace"]


def _raises(budget_s):
    raise RuntimeError("broken phase")


def test_failing_phase_does_not_stop_later_ones():
    ran = []
    phases = [
        gpu_check.Phase("first", 10, lambda b: gpu_check.PhaseResult(False, "failed on purpose")),
        gpu_check.Phase("second", 10, _raises),
        gpu_check.Phase("third", 10, lambda b: ran.append(b) or gpu_check.PhaseResult(True, "ok")),
    ]
    records = gpu_check.run_phases(phases)
    assert [r["status"] for r in records] == ["failed", "failed", "passed"] and ran
    assert "broken phase" in records[1]["detail"]
    assert gpu_check.failed_phases(records) == ["first", "second"]


def test_time_budget_is_enforced():
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
    phases = [
        gpu_check.Phase("slow", 1.5, lambda b: gpu_check.PhaseResult(gpu_check.run_command(sleeper, b)[0] == 0, "slept")),
        gpu_check.Phase("after", 10, lambda b: gpu_check.PhaseResult(True, f"budget {b:.1f}")),
        gpu_check.Phase("late", 10, lambda b: gpu_check.PhaseResult(True, "never runs")),
    ]
    began = time.monotonic()
    records = gpu_check.run_phases(phases, total_budget_s=3.0)
    assert time.monotonic() - began < 10
    assert records[0]["status"] == "timeout" and records[0]["seconds"] < 5
    assert records[1]["status"] == "passed" and records[1]["budget_s"] <= 1.6  # clipped to what is left of the total
    records = gpu_check.run_phases(phases[1:], total_budget_s=0.5)
    assert [r["status"] for r in records] == ["skipped", "skipped"]


@pytest.mark.parametrize("op", sorted(gpu_check.SNIPPETS))
def test_sanitizer_snippet_runs_on_cpu(op):
    code = gpu_check.sanitizer_snippet(op, "cuda", "cuda")
    assert "DEVICE, BACKEND = 'cuda', 'cuda'" in code and "torch.cuda.synchronize()" in code
    exec(compile(gpu_check.sanitizer_snippet(op, "cpu", "cpu"), f"<{op}>", "exec"), {})


def test_results_schema_of_a_tiny_cpu_run(tmp_path):
    phases = [gpu_check.Phase("bench", 60, gpu_check.bench_phase(True, tmp_path))]
    records = gpu_check.run_phases(phases)
    assert records[0]["status"] == "passed", records[0]["detail"]
    doc = gpu_check.results_document(records, True, {"gpu": "none", "torch": "2.13.0", "capability": None}, "2026-01-01")
    gpu_check.check_schema(json.loads(json.dumps(doc)))
    backends = {c["backend"] for c in doc["benchmarks"]}
    assert {"reference", "cpu", "eager"} <= backends
    assert {c["noise"] for c in doc["benchmarks"] if c["kind"] == "step"} == {"none", "counter", "brownian"}
    summary = gpu_check.markdown_summary(doc)
    assert "all phases passed" in summary and len(summary.splitlines()) < 40
    broken = dict(doc, phases=[dict(doc["phases"][0], status="maybe")])
    with pytest.raises(ValueError, match="status"):
        gpu_check.check_schema(broken)
    assert gpu_check.results_stem("NVIDIA H200", "2026-01-01") == "nvidia-h200-2026-01-01"
