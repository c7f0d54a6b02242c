"""What a SuperDiff superposition is: M denoisers and how they are combined (OR / AND), validated once."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch

from fastdiff.ops.ito_step import DEFAULT_RCOND, MAX_MODELS, MODES
from fastdiff.validation import check_number

Denoiser = Callable[..., torch.Tensor]


def _real(value: object, name: str) -> float:
    return check_number(value, name, -math.inf)


def _per_model(values: Sequence[float], name: str, m: int) -> list[float]:
    """One finite float per denoiser, named `name[i]` in errors."""
    checked = [_real(v, f"{name}[{i}]") for i, v in enumerate(values)]
    if len(checked) != m:
        raise ValueError(f"{name} needs one entry per denoiser, got {len(checked)} for {m}")
    return checked


class SuperpositionConfig:
    """M denoisers combined at sampling time (SuperDiff, Skreta et al. 2024, arXiv 2412.17762).

    - mode "or" samples the mixture sum_i w_i q_i / sum w (at temperature 1): every step moves with
      u = sum_i kappa_i s_i, kappa = softmax(T log q + log w), the log q_i tracked by the Itô estimator.
    - mode "and" samples points where all log q_i - bias_i are equal: kappa is solved per step so that the
      Itô updates of the log q_i (with the step's own noise) keep them equal.

    Fields: `denoisers`, `mode`, `temperature`, `log_weights` and `bias` (one host float per denoiser), `rcond`.
    Calling it returns the list [D_1(x, sigma), ..., D_M(x, sigma)]. `fastdiff.compose.Superposition` adds `.sample`.
    """

    def __init__(
        self,
        denoisers: Sequence[Denoiser],
        mode: str = "or",
        temperature: float = 1.0,
        log_weights: Sequence[float] | None = None,
        bias: float | Sequence[float] = 0.0,
        rcond: float = DEFAULT_RCOND,
    ):
        if isinstance(denoisers, SuperpositionConfig) or not isinstance(denoisers, Sequence):
            raise TypeError(f"denoisers must be a list of denoisers D(x, sigma), got {type(denoisers).__name__}")
        self.denoisers = list(denoisers)
        m = len(self.denoisers)
        for i, d in enumerate(self.denoisers):
            if not callable(d):
                raise TypeError(f"denoisers[{i}] must be callable as D(x, sigma), got {type(d).__name__}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        lowest = 2 if mode == "and" else 1
        if not lowest <= m <= MAX_MODELS:
            raise ValueError(f"mode {mode!r} needs {lowest} to {MAX_MODELS} denoisers, got {m}")
        self.mode = mode
        self.temperature = _real(temperature, "temperature")
        self.log_weights = [0.0] * m if log_weights is None else _per_model(log_weights, "log_weights", m)
        if isinstance(bias, numbers.Real) and not isinstance(bias, bool):
            value = _real(bias, "bias")
            if value != 0.0 and m != 2:
                raise ValueError(f"a scalar bias (the target log q_1 - log q_2) needs 2 denoisers, got {m}; "
                                 "pass one offset per denoiser")
            self.bias = [value] + [0.0] * (m - 1)
        else:
            self.bias = _per_model(bias, "bias", m)
        self.rcond = check_number(rcond, "rcond")
        if mode == "and" and (log_weights is not None or self.temperature != 1.0):
            raise ValueError("log_weights and temperature belong to mode 'or'; mode 'and' is steered by bias")

    def __len__(self) -> int:
        return len(self.denoisers)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, **extra_args) -> list[torch.Tensor]:
        """[D_1(x, sigma), ..., D_M(x, sigma)]: every model's denoised output (not a combined denoiser)."""
        return [d(x, sigma, **extra_args) for d in self.denoisers]
