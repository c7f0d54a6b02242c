"""fastdiff: fast diffusion sampling.

    sigmas = fastdiff.get_sigmas("karras", 10, 0.002, 80.0)
    samples = fastdiff.sample(denoiser, torch.randn(16, 2) * sigmas[0], sigmas, solver="srk", seed=0)
    schedule = fastdiff.ld3.learn_sigmas(denoiser, "ipndm", 4, shape=(2,))  # LD3: a learned grid for 4 evaluations

The public names load on first use (PEP 562), so importing a leaf such as the pure-PyTorch oracle
`fastdiff.reference` loads neither the solvers nor the compiled extension `fastdiff._C`.
"""

import importlib
import importlib.util

# `backends` names both a submodule and the function exported here: bound now, so that importing the
# submodule later (every op does) cannot replace the function. It loads no compiled code.
from fastdiff.backends import backends

__version__ = "0.1.0"
__all__ = [
    "SOLVERS",
    "NonFiniteError",
    "backends", "compose", "density", "get_sigmas", "ld3", "models", "sample", "sampling", "toy", "train"]

_NAMES = {"sample": "fastdiff.driver", "NonFiniteError": "fastdiff.finite_watch", "get_sigmas": "fastdiff.grids",
          "SOLVERS": "fastdiff.solvers"}


def __getattr__(name: str) -> object:
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
        globals()[name] = value
        return value
    if not name.startswith("__") and importlib.util.find_spec(f"fastdiff.{name}") is not None:
        return importlib.import_module(f"fastdiff.{name}")  # a subpackage or module, e.g. fastdiff.compose
    raise AttributeError(f"module 'fastdiff' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
