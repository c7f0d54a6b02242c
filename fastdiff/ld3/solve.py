"""One solve down a grid with the step rules of `fastdiff.solvers`, the requests answered at the model times.

The same loop serves the student (0-d tensor grid that requires grad: differentiable, backend "reference"), the
teacher and the held-out evaluations (host floats, any backend).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from fastdiff.ld3.model_time import ModelTimes
from fastdiff.solvers import StepContext, make_solver
from fastdiff.stepping import host_float
from fastdiff.stepping import solve as walk


def solve(
    network: Callable[[torch.Tensor, object], torch.Tensor],
    solver: str,
    options: dict,
    sigmas: Sequence,
    x: torch.Tensor,
    model_sigmas: Sequence | None = None,
    backend: str = "reference",
) -> torch.Tensor:
    """x at sigmas[0] -> the state at sigmas[-1]; `network(x, sigma)` is evaluated at model_sigmas where given."""
    rule = make_solver(solver, **options)
    points = list(sigmas)
    host = torch.tensor([host_float(s) for s in points], dtype=torch.float64, device=x.device)
    ctx = StepContext(sigmas=points, sigmas_tensor=host.to(x.dtype), noise=None, backend=backend)
    evaluate = network if model_sigmas is None else ModelTimes(points, list(model_sigmas)).wrap(network)
    return walk(rule, ctx, x, evaluate)
