"""The variance-preserving noise table of a diffusers scheduler config, and the maps between its training
timesteps, fastdiff's VE sigmas and a pipeline's VP samples (DESIGN.md section 3).

A diffusers model sees x_vp = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps at training timestep t. In fastdiff's VE form the
same point is x = x_vp / sqrt(abar_t) = x0 + sigma_t eps, sigma_t = sqrt((1 - abar_t) / abar_t); equivalently
x_vp = alpha x with alpha = 1 / sqrt(1 + sigma^2). A sigma between table entries maps to the fractional timestep that
interpolates log sigma linearly between neighbouring entries (the map of diffusers' DPMSolverMultistepScheduler and
EulerDiscreteScheduler, and of `fastdiff.models.VPEpsDenoiser`), and back.

The betas are built in float32 exactly as diffusers builds them, so the table is the one the model was trained with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from fastdiff.validation import check_positive_int

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
# The alpha-bar kept at the last timestep of a zero-terminal-SNR schedule, where it would be 0 (sigma = inf), as diffusers
# keeps it (sigma = 4096); capped at half the previous entry so that the table stays monotone.
ZERO_SNR_FLOOR = 2.0**-24
_COSINE_MAX_BETA = 0.999


def _cosine_betas(n: int) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule: beta_i = min(1 - f((i+1)/n) / f(i/n), 0.999), f(t) = cos((t + 0.008)/1.008 pi/2)^2."""

    def f(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return torch.tensor([min(1.0 - f((i + 1) / n) / f(i / n), _COSINE_MAX_BETA) for i in range(n)], dtype=torch.float32)


def _zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(abar) so that it ends at 0 and keeps its first value (Lin et al. 2023, arXiv 2305.08891, Alg. 1)."""
    root = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    abar = ((root - last) * first / (first - last)) ** 2
    return 1.0 - torch.cat([abar[:1], abar[1:] / abar[:-1]])


def training_betas(
    num_train_timesteps: int,
    beta_start: float,
    beta_end: float,
    beta_schedule: str,
    trained_betas: Sequence[float] | np.ndarray | None = None,
    rescale_betas_zero_snr: bool = False,
) -> torch.Tensor:
    """The float32 betas of a diffusers config. `trained_betas` wins over `beta_schedule` and, as in diffusers, its
    length is the table's: num_train_timesteps is then not used."""
    if trained_betas is not None:
        betas = torch.tensor(np.asarray(trained_betas, dtype=np.float64), dtype=torch.float32)
        if betas.ndim != 1 or betas.shape[0] < 2:
            raise ValueError(f"trained_betas must be a 1-D list of at least 2 numbers, got shape {tuple(betas.shape)}")
    else:
        n = check_positive_int(num_train_timesteps, "num_train_timesteps", minimum=2)
        if beta_schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float32)
        elif beta_schedule == "scaled_linear":
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float32) ** 2
        elif beta_schedule == "squaredcos_cap_v2":
            betas = _cosine_betas(n)
        else:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES} (or trained_betas given), got {beta_schedule!r}")
    if not bool(((betas > 0) & (betas < 1)).all()):
        raise ValueError(f"betas must lie in (0, 1), got {betas.min().item():g}..{betas.max().item():g}")
    return _zero_terminal_snr(betas) if rescale_betas_zero_snr else betas


class VPTable:
    """sigma_t = sqrt((1 - abar_t) / abar_t) for the training timesteps t = 0..T-1 (increasing), and the maps through it
    (`FlowTable` has the same interface for flow configs)."""

    prediction_types = PREDICTION_TYPES

    def __init__(self, betas: torch.Tensor):
        abar = torch.cumprod(1.0 - betas, dim=0)
        if abar[-1] <= 0:  # zero terminal SNR: diffusers' floor, or half the previous entry where that is smaller
            abar[-1] = min(ZERO_SNR_FLOOR, abar[-2].item() / 2)
        if not bool((abar[1:] < abar[:-1]).all()):
            raise ValueError("the betas must give a strictly decreasing alphas_cumprod (every beta > 0)")
        self.alphas_cumprod = abar
        abar64 = abar.double()
        self.sigmas = ((1.0 - abar64) / abar64).sqrt()
        self.log_sigmas = self.sigmas.log()
        self._log_sigmas_np = self.log_sigmas.numpy()
        self._tables: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    @property
    def num_train_timesteps(self) -> int:
        return self.sigmas.shape[0]

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def timesteps_of(self, sigmas: Sequence[float]) -> np.ndarray:
        """Fractional training timesteps (float64) of positive host sigmas; exact integers at table entries."""
        return np.interp(np.log(np.asarray(sigmas, dtype=np.float64)), self._log_sigmas_np, np.arange(self.num_train_timesteps))

    def sigmas_at(self, timesteps: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """sigma at (fractional) timesteps, on their device and without a host sync; t is clamped to [0, T - 1]."""
        key = (timesteps.device, dtype)
        if key not in self._tables:
            self._tables[key] = self.log_sigmas.to(device=timesteps.device, dtype=dtype)
        table = self._tables[key]
        t = timesteps.to(dtype).clamp(0, self.num_train_timesteps - 1)
        low = t.floor().long().clamp(max=self.num_train_timesteps - 2)
        w = t - low
        return ((1.0 - w) * table[low] + w * table[low + 1]).exp()

    def to_solver(self, sample: torch.Tensor, sigma: float, dtype: torch.dtype) -> torch.Tensor:
        return to_ve(sample, sigma, dtype)

    def to_pipeline(self, x: torch.Tensor, sigma: float, dtype: torch.dtype) -> torch.Tensor:
        return to_vp(x, sigma, dtype)

    def denoised(self, output: torch.Tensor, x: torch.Tensor, sigma: float, prediction_type: str) -> torch.Tensor:
        return denoised(output, x, sigma, prediction_type)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The VP sample sqrt(abar) x0 + sqrt(1 - abar) noise at (fractional) training timesteps, in `dtype`; no host sync."""
        sigma = self.sigmas_at(timesteps.reshape(-1), dtype).view(-1, *([1] * (x0.ndim - 1)))
        alpha = torch.rsqrt(1.0 + sigma * sigma)
        return alpha * x0.to(dtype) + (alpha * sigma) * noise.to(dtype)

    def check_sigma_range(self, sigmas: Sequence[float], name: str, hint: str = "") -> None:
        """Positive sigmas must lie in the table's range [sigma_min, sigma_max], where the model was trained."""
        positive = [s for s in sigmas if s > 0]
        low, high = self.sigma_min, self.sigma_max
        if positive and (min(positive) < low * (1 - 1e-6) or max(positive) > high * (1 + 1e-6)):
            raise ValueError(
                f"{name} must lie in the model's noise range [{low:.6g}, {high:.6g}] (the training timesteps), "
                f"got {min(positive):.6g}..{max(positive):.6g}{hint}"
            )


def to_ve(sample: torch.Tensor, sigma: float, dtype: torch.dtype) -> torch.Tensor:
    """A pipeline's VP sample at noise level sigma as fastdiff's VE state x = x_vp sqrt(1 + sigma^2)."""
    return sample.to(dtype) * math.sqrt(1.0 + sigma * sigma)


def to_vp(x: torch.Tensor, sigma: float, dtype: torch.dtype) -> torch.Tensor:
    """fastdiff's VE state at sigma as the pipeline's VP sample x / sqrt(1 + sigma^2)."""
    return (x / math.sqrt(1.0 + sigma * sigma)).to(dtype)



def denoised(output: torch.Tensor, x: torch.Tensor, sigma: float, prediction_type: str) -> torch.Tensor:
    """D(x, sigma) from a VP model's output at x_vp = alpha x (alpha = 1/sqrt(1 + sigma^2), sigma_vp = alpha sigma):
    epsilon: D = x - sigma eps;  v_prediction: D = alpha x_vp - sigma_vp v = alpha^2 x - alpha sigma v;  sample: D = x0."""
    output = output.to(x.dtype)
    if prediction_type == "epsilon":
        return torch.add(x, output, alpha=-sigma)
    if prediction_type == "v_prediction":
        alpha = 1.0 / math.sqrt(1.0 + sigma * sigma)
        return torch.add(x * (alpha * alpha), output, alpha=-alpha * sigma)
    return output
