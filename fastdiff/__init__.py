"""fastdiff: fast diffusion sampling.

    x = torch.randn(16, 2) * sigmas[0]
    samples = fastdiff.sample(denoiser, x, fastdiff.get_sigmas("karras", 10, 0.002, 80.0), solver="srk", seed=0)
"""

from fastdiff.backends import backends
from fastdiff.driver import sample
from fastdiff.grids import get_sigmas
from fastdiff.solvers import SOLVERS

__version__ = "0.1.0"
__all__ = ["SOLVERS", "backends", "get_sigmas", "sample"]
