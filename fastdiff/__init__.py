"""fastdiff: fast diffusion sampling.

    sigmas = fastdiff.get_sigmas("karras", 10, 0.002, 80.0)
    samples = fastdiff.sample(denoiser, torch.randn(16, 2) * sigmas[0], sigmas, solver="srk", seed=0)
    schedule = fastdiff.ld3.learn_sigmas(denoiser, "ipndm", 4, shape=(2,))  # LD3: a learned grid for 4 evaluations
"""

from fastdiff import compose, density, ld3, models, sampling, toy, train
from fastdiff.backends import backends
from fastdiff.driver import sample
from fastdiff.finite_watch import NonFiniteError
from fastdiff.grids import get_sigmas
from fastdiff.solvers import SOLVERS

__version__ = "0.1.0"
__all__ = [
    "SOLVERS",
    "NonFiniteError",
    "backends", "compose", "density", "get_sigmas", "ld3", "models", "sample", "sampling", "toy", "train"]
