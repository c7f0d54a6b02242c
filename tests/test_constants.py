"""The numbers shared by Python, Triton, C++ and CUDA have one source, and every other copy equals it.

Each constant, its source, and its copies (read here as text, so no build, GPU or triton is needed):

- STREAM_PROBE (fastdiff.noise): csrc/limits.h kStreamProbe; kernels/trace_step.py imports it.
- STREAM_SOLVER, STREAM_INITIAL, STREAM_TRAIN (fastdiff.noise): no copy (only Python draws them).
- PROBE_STRIDE (fastdiff.noise): csrc/limits.h kProbeStride; fastdiff.reference.trace_step and
  kernels/trace_step.py (as the shift PROBE_SHIFT) import it.
- MAX_NUMEL (fastdiff.noise): csrc/limits.h kMaxNumel; fastdiff.ops.philox imports it.
- 2^32 counter words (fastdiff.reference.philox MASK32 + 1): csrc/limits.h kCounterWords.
- PHILOX_M0, PHILOX_M1, PHILOX_W0, PHILOX_W1, ROUNDS (fastdiff.reference.philox): csrc/philox.h kPhiloxM0, kPhiloxM1,
  kPhiloxW0, kPhiloxW1, kPhiloxRounds; kernels/philox.py imports them.
- MAX_DRAWS, MAX_TERMS, MAX_MODELS, PART_MIN, MAX_PARTS (fastdiff.kernels.limits): csrc/limits.h kMaxDraws,
  kMaxTerms, kMaxModels, kPartMin, kMaxParts; fastdiff.ops.solver_step (MAX_DRAWS), fastdiff.ops.ito_step
  (MAX_MODELS) and the Triton kernels import them; csrc/cuda/ito_step.cu has one FASTDIFF_ITO_CASE per model count.
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib
import re

import pytest

from fastdiff import noise
from fastdiff.reference import philox as reference_philox

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIMITS = importlib.util.spec_from_file_location("kernel_limits", ROOT / "kernels" / "limits.py")
limits = importlib.util.module_from_spec(LIMITS)
LIMITS.loader.exec_module(limits)

# C++ name -> (file that holds the one C copy, value of the one source)
C_COPIES = {
    "kStreamProbe": ("csrc/limits.h", noise.STREAM_PROBE),
    "kProbeStride": ("csrc/limits.h", noise.PROBE_STRIDE),
    "kMaxNumel": ("csrc/limits.h", noise.MAX_NUMEL),
    "kCounterWords": ("csrc/limits.h", reference_philox.MASK32 + 1),
    "kMaxDraws": ("csrc/limits.h", limits.MAX_DRAWS),
    "kMaxTerms": ("csrc/limits.h", limits.MAX_TERMS),
    "kMaxModels": ("csrc/limits.h", limits.MAX_MODELS),
    "kPartMin": ("csrc/limits.h", limits.PART_MIN),
    "kMaxParts": ("csrc/limits.h", limits.MAX_PARTS),
    "kPhiloxM0": ("csrc/philox.h", reference_philox.PHILOX_M0),
    "kPhiloxM1": ("csrc/philox.h", reference_philox.PHILOX_M1),
    "kPhiloxW0": ("csrc/philox.h", reference_philox.PHILOX_W0),
    "kPhiloxW1": ("csrc/philox.h", reference_philox.PHILOX_W1),
    "kPhiloxRounds": ("csrc/philox.h", reference_philox.ROUNDS),
}
# Python name -> value of the one source; the kernels import these, never write them down.
PY_SOURCES = {
    "STREAM_SOLVER": noise.STREAM_SOLVER, "STREAM_PROBE": noise.STREAM_PROBE, "STREAM_INITIAL": noise.STREAM_INITIAL,
    "STREAM_TRAIN": noise.STREAM_TRAIN, "PROBE_STRIDE": noise.PROBE_STRIDE, "MAX_NUMEL": noise.MAX_NUMEL,
    "PHILOX_M0": reference_philox.PHILOX_M0, "PHILOX_M1": reference_philox.PHILOX_M1,
    "PHILOX_W0": reference_philox.PHILOX_W0, "PHILOX_W1": reference_philox.PHILOX_W1, "ROUNDS": reference_philox.ROUNDS,
    "MAX_DRAWS": limits.MAX_DRAWS, "MAX_TERMS": limits.MAX_TERMS, "MAX_MODELS": limits.MAX_MODELS,
    "PART_MIN": limits.PART_MIN, "MAX_PARTS": limits.MAX_PARTS,
}
C_SOURCES = sorted(p for p in (ROOT / "csrc").rglob("*") if p.suffix in (".h", ".cpp", ".cu", ".cuh"))
CONSTEXPR = re.compile(r"constexpr\s+[\w:]+\s+(k\w+)\s*=\s*([^;]+);")


def c_value(expr: str) -> int:
    """An integer constant expression of the C sources: literals (0x.., u suffix), int64_t(n) casts, << and *."""
    expr = re.sub(r"\b(?:u?int(?:32|64)_t|int)\((\w+)\)", r"\1", expr)
    expr = re.sub(r"\b(0x[0-9a-fA-F]+|\d+)[uU]?[lL]*\b", r"\1", expr)
    tree = ast.parse(expr.strip(), mode="eval")
    allowed = (ast.Expression, ast.BinOp, ast.Constant, ast.LShift, ast.Mult, ast.Add, ast.Sub)
    if not all(isinstance(node, allowed) for node in ast.walk(tree)):
        raise ValueError(f"not a plain integer constant expression: {expr!r}")
    return eval(compile(tree, "<c constant>", "eval"))


def c_definitions() -> dict[str, list[tuple[str, int]]]:
    """Every `constexpr T kName = ...;` of csrc/, by name: [(file, value)]."""
    found: dict[str, list[tuple[str, int]]] = {}
    for path in C_SOURCES:
        for name, expr in CONSTEXPR.findall(path.read_text()):
            if name in C_COPIES:
                found.setdefault(name, []).append((str(path.relative_to(ROOT)), c_value(expr)))
    return found


@pytest.mark.parametrize("name", sorted(C_COPIES))
def test_each_c_constant_has_one_copy_equal_to_its_source(name):
    where, value = C_COPIES[name]
    assert c_definitions().get(name) == [(where, value)], f"{name} must be defined once, in {where}, as {value}"


def test_the_cuda_model_dispatch_covers_every_model_count():
    text = (ROOT / "csrc" / "cuda" / "ito_step.cu").read_text()
    cases = [int(m) for m in re.findall(r"^\s*FASTDIFF_ITO_CASE\((\d+)\)", text, flags=re.M)]
    assert cases == list(range(1, limits.MAX_MODELS + 1))


@pytest.mark.parametrize("path", sorted((ROOT / "kernels").glob("*.py")), ids=lambda p: p.name)
def test_the_triton_kernels_import_the_constants(path):
    if path.name == "limits.py":
        return
    assigned = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            assigned[node.targets[0].id] = node.value
    for name, value in assigned.items():
        literal = value.args[0] if isinstance(value, ast.Call) and value.args else value  # tl.constexpr(...)
        if name in PY_SOURCES:
            assert not isinstance(literal, ast.Constant), f"{path.name}: {name} is written down; import it from its source"


def test_the_python_homes_agree():
    from fastdiff.ops import ito_step, philox, solver_step
    from fastdiff.reference import trace_step

    assert solver_step.MAX_DRAWS == limits.MAX_DRAWS and ito_step.MAX_MODELS == limits.MAX_MODELS
    assert philox.MAX_NUMEL == noise.MAX_NUMEL and trace_step.PROBE_STRIDE == noise.PROBE_STRIDE
    streams = [noise.STREAM_SOLVER, noise.STREAM_PROBE, noise.STREAM_INITIAL, noise.STREAM_TRAIN]
    assert len(set(streams)) == len(streams)
    assert noise.PROBE_STRIDE & (noise.PROBE_STRIDE - 1) == 0  # a power of two: the kernels shift by log2 of it


def test_a_drifted_copy_is_caught():
    assert c_value("int64_t(4) << 32") == noise.MAX_NUMEL
    assert c_value("0xD2511F53u") == reference_philox.PHILOX_M0
    assert c_value("1u << 16") == noise.PROBE_STRIDE
    assert c_value("1u << 15") != noise.PROBE_STRIDE
