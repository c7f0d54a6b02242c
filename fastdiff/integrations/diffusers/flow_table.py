"""The rectified-flow time of a diffusers flow config, and the maps between its model timesteps, fastdiff's VE sigmas
and a flow pipeline's samples (docs/ALGORITHMS.md section 14).

A flow model (SD3, Flux, Wan, ...) sees x_t = (1 - t) x0 + t eps at time t in [0, 1], timestep 1000 t (in general
num_train_timesteps * t), and predicts the velocity v = eps - x0. In fastdiff's VE form x = x0 + sigma eps the same
point is x = x_t / (1 - t) with sigma = t / (1 - t) (`fastdiff.flow_time`), and D(x, sigma) = x_t - t v. At t = 1
(sigma = inf, where every flow pipeline starts) the solver's state is the unit noise x_t itself and D = x_t - v; the
maps below are exact there. `FlowTable` has `VPTable`'s interface, so a scheduler holds either.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from fastdiff.flow_time import flow_t_to_sigma, sigma_to_flow_t
from fastdiff.validation import check_positive_int


def _scale(sigma: float) -> float:
    """1 / (1 - t) = 1 + sigma, the VE state per unit of x_t; the state at sigma = inf is x_t itself (scale 1)."""
    return 1.0 if math.isinf(sigma) else 1.0 + sigma


class FlowTable:
    """Flow time t = timestep / num_train_timesteps in (0, 1]; the model takes every t there, t = 1 included."""

    prediction_types = ("flow_prediction",)

    def __init__(self, num_train_timesteps: int):
        self._n = check_positive_int(num_train_timesteps, "num_train_timesteps", minimum=2)

    @property
    def num_train_timesteps(self) -> int:
        return self._n

    @property
    def sigma_min(self) -> float:
        """The VE sigma of diffusers' last training time t = 1 / num_train_timesteps."""
        return flow_t_to_sigma(1.0 / self._n)

    @property
    def sigma_max(self) -> float:
        return math.inf

    def timesteps_of(self, sigmas: Sequence[float]) -> np.ndarray:
        """num_train_timesteps * t of host sigmas (float64); sigma = inf is t = 1."""
        return np.array([self._n * sigma_to_flow_t(float(s)) for s in sigmas], dtype=np.float64)

    def flow_times(self, timesteps: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """t = timestep / num_train_timesteps on the timesteps' device, no host sync."""
        return timesteps.to(dtype) / self._n

    def sigmas_at(self, timesteps: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """sigma = t / (1 - t) at model timesteps (inf at t = 1), on their device and without a host sync."""
        return flow_t_to_sigma(self.flow_times(timesteps, dtype).clamp(0, 1))

    def check_sigma_range(self, sigmas: Sequence[float], name: str, hint: str = "") -> None:
        """A flow model is trained on every t in (0, 1]: every positive sigma, inf included, is in range."""

    def to_solver(self, sample: torch.Tensor, sigma: float, dtype: torch.dtype) -> torch.Tensor:
        """The pipeline's x_t at sigma as the VE state x = x_t (1 + sigma); x_t itself at sigma = inf."""
        return sample.to(dtype) * _scale(sigma)

    def to_pipeline(self, x: torch.Tensor, sigma: float, dtype: torch.dtype) -> torch.Tensor:
        """The VE state at sigma as the pipeline's x_t = x / (1 + sigma); x itself at sigma = inf."""
        return (x / _scale(sigma)).to(dtype)

    def denoised(self, output: torch.Tensor, x: torch.Tensor, sigma: float, prediction_type: str) -> torch.Tensor:
        """D = x_t - t v from the velocity v at x_t = x / (1 + sigma), t = sigma / (1 + sigma): D = (x - sigma v) / (1 + sigma);
        at sigma = inf D = x - v (x the unit noise x_t)."""
        output = output.to(x.dtype)
        if math.isinf(sigma):
            return x - output
        return torch.add(x, output, alpha=-sigma) / (1.0 + sigma)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """x_t = (1 - t) x0 + t noise at model timesteps (one, or one per sample), in `dtype`; no host sync."""
        t = self.flow_times(timesteps.reshape(-1), dtype).view(-1, *([1] * (x0.ndim - 1)))
        return (1.0 - t) * x0.to(dtype) + t * noise.to(dtype)
