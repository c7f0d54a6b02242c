"""Decoupled model time: the network is evaluated at model_sigma_i where the solver's coefficients use sigma_i.

The mapping sits where the evaluation requests are answered (the LD3 training loop, `fastdiff.sample` given a
`LearnedSchedule`), never inside a step rule: a rule asks for D(x, sigma_i) at a grid point, and the answer is
D(x, model_sigma_i).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from fastdiff.stepping import host_float

Evaluate = Callable[[torch.Tensor, object], torch.Tensor]


class ModelTimes:
    """sigma_i -> model_sigma_i for the points of one grid (floats or 0-d tensors; looked up by value)."""

    def __init__(self, sigmas: Sequence, model_sigmas: Sequence):
        if len(sigmas) != len(model_sigmas):
            raise ValueError(f"sigmas and model_sigmas must have the same length, got {len(sigmas)} and {len(model_sigmas)}")
        self._index = {host_float(s): j for j, s in enumerate(sigmas)}
        self._model = list(model_sigmas)

    def __call__(self, sigma: float | torch.Tensor) -> float | torch.Tensor:
        j = self._index.get(host_float(sigma))
        if j is None:
            raise ValueError(
                f"sigma {host_float(sigma)!r} is not a point of the learned grid: decoupled model times exist only at "
                "grid points (a solver option such as churn moved the evaluation)"
            )
        return self._model[j]

    def wrap(self, evaluate: Evaluate) -> Evaluate:
        """`evaluate(x, sigma)` answered at the model time of `sigma`."""
        return lambda x, sigma: evaluate(x, self(sigma))
