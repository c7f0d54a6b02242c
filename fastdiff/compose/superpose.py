"""SuperDiff superposition of several denoisers: configuration and the per-step weights (OR / AND)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch

from fastdiff.ops.ito_step import DEFAULT_RCOND, MAX_MODELS, MODES

Denoiser = Callable[..., torch.Tensor]


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    return float(value)


class Superposition:
    """M denoisers combined at sampling time (SuperDiff, Skreta et al. 2024, arXiv 2412.17762).

    - mode "or" samples the mixture sum_i w_i q_i / sum w (at temperature 1): every step moves with
      u = sum_i kappa_i s_i, kappa = softmax(T log q + log w), the log q_i tracked by the Itô estimator.
    - mode "and" samples points where all log q_i - bias_i are equal: kappa is solved per step so that the
      Itô updates of the log q_i (with the step's own noise) keep them equal.

    What it can be used with: `fastdiff.compose.sample_superposed(superposition, x, sigmas, ...)` (or its
    `.sample(x, sigmas, ...)`), and a hand-written loop around `fastdiff.ops.ito_step.ito_step`, which takes the
    list that calling it returns. What it cannot: it is not a drop-in denoiser for `fastdiff.sample` or the
    k-diffusion-style samplers. Its weights depend on running log-densities, and AND's on the noise of the
    very step being taken, so no single D(x, sigma) exists. Calling it returns the list [D_1(x, sigma), ...].
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
        if isinstance(denoisers, Superposition) or not isinstance(denoisers, Sequence):
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
        self.temperature = _finite("temperature", temperature)
        if log_weights is None:
            self.log_weights = [0.0] * m
        else:
            self.log_weights = [_finite(f"log_weights[{i}]", w) for i, w in enumerate(log_weights)]
            if len(self.log_weights) != m:
                raise ValueError(f"log_weights needs one entry per denoiser, got {len(self.log_weights)} for {m}")
        if isinstance(bias, numbers.Real) and not isinstance(bias, bool):
            value = _finite("bias", bias)
            if value != 0.0 and m != 2:
                raise ValueError(f"a scalar bias (the target log q_1 - log q_2) needs 2 denoisers, got {m}; "
                                 "pass one offset per denoiser")
            self.bias = [value] + [0.0] * (m - 1)
        else:
            self.bias = [_finite(f"bias[{i}]", b) for i, b in enumerate(bias)]
            if len(self.bias) != m:
                raise ValueError(f"bias needs one entry per denoiser, got {len(self.bias)} for {m}")
        self.rcond = _finite("rcond", rcond)
        if self.rcond < 0.0:
            raise ValueError(f"rcond must be >= 0, got {self.rcond}")
        if mode == "and" and (log_weights is not None or self.temperature != 1.0):
            raise ValueError("log_weights and temperature belong to mode 'or'; mode 'and' is steered by bias")

    def __len__(self) -> int:
        return len(self.denoisers)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, **extra_args) -> list[torch.Tensor]:
        """[D_1(x, sigma), ..., D_M(x, sigma)]: every model's denoised output (not a combined denoiser, see above)."""
        return [d(x, sigma, **extra_args) for d in self.denoisers]

    def sample(self, x: torch.Tensor, sigmas, **options) -> tuple[torch.Tensor, torch.Tensor]:
        """`fastdiff.compose.sample_superposed(self, x, sigmas, **options)`."""
        from fastdiff.compose.sampler import sample_superposed

        return sample_superposed(self, x, sigmas, **options)


def superpose(
    denoisers: Sequence[Denoiser],
    mode: str = "or",
    *,
    temperature: float = 1.0,
    log_weights: Sequence[float] | None = None,
    bias: float | Sequence[float] = 0.0,
    rcond: float = DEFAULT_RCOND,
) -> Superposition:
    """Combine `denoisers` by SuperDiff's OR (mixture, `temperature`, `log_weights` = log w_i) or AND
    (equal densities; `bias` = target log q_1 - log q_2 for two models, or one offset per model), see `Superposition`."""
    return Superposition(denoisers, mode, temperature, log_weights, bias, rcond)
